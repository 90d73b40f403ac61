//go:build linux

package graceful_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// The API's traps of issue 11, each fixed, and what Done, the Logger and
// the errors say.
var _ = Describe("Server.Done", func() {
	It("may call Close: the restart recipe does not deadlock", func() {
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		closed := make(chan error, 1)
		srv.Done = func(err error) {
			if err == nil {
				closed <- srv.Close()
			}
		}
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(closed).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
		Eventually(served).WithTimeout(5 * time.Second).Should(Receive(MatchError(graceful.ErrServerClosed)))
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(MatchError(graceful.ErrNoServer))
	})

	It("is not called for a connection closed before its first byte, which is logged at debug level only", func() {
		log := newLineCounter()
		done := make(chan error, 4)
		addr, _ := serve(&graceful.Server{
			Handler: graceful.CallbackHandler(func() {}),
			Logger:  slog.New(log),
			Done:    func(err error) { done <- err },
		})
		c, err := net.Dial("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		Expect(c.Close()).To(Succeed())
		Eventually(log.String).Should(ContainSubstring("closed before its first byte"))
		Expect(done).To(BeEmpty(), "Done heard of it")
		Expect(log.count(slog.LevelError)).To(BeZero())
		Expect(log.count(slog.LevelInfo)).To(BeZero())

		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(done).Should(Receive(BeNil()), "the next session is reported")
	})

	It("tells turned-away receivers apart: ErrBusy and ErrUnauthorized, each an *OpError naming the address", func() {
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		addr, done := serve(srv)
		expectBusyDuringSession(addr, done)

		refusing, refused := serve(&graceful.Server{
			Handler:   graceful.CallbackHandler(func() {}),
			Authorize: func(graceful.PeerCred) error { return errors.New("nobody today") },
		})
		Expect(graceful.Receive(refusing, func(int, io.Reader) error { return nil })).To(MatchError(graceful.ErrUnauthorized))
		var err error
		Eventually(refused).Should(Receive(&err))
		Expect(err).To(MatchError(graceful.ErrUnauthorized))
		var oe *graceful.OpError
		Expect(errors.As(err, &oe)).To(BeTrue())
		Expect(oe.Op).To(Equal("serve"))
		Expect(oe.Addr).To(Equal(refusing))
		Expect(err.Error()).To(ContainSubstring("nobody today"))
	})
})

var _ = Describe("the address in an *OpError for a connection of the caller's", func() {
	// pair dials a fresh socket and returns both ends.
	pair := func(addr string, ln net.Listener) (dialed, accepted net.Conn) {
		GinkgoHelper()
		ch := make(chan net.Conn, 1)
		go func() {
			if c, err := ln.Accept(); err == nil {
				ch <- c
			}
		}()
		dialed, err := net.Dial("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { dialed.Close() })
		Eventually(ch).Should(Receive(&accepted))
		DeferCleanup(func() { accepted.Close() })
		return dialed, accepted
	}
	addrOf := func(err error) string {
		GinkgoHelper()
		var oe *graceful.OpError
		Expect(errors.As(err, &oe)).To(BeTrue(), "%v", err)
		return oe.Addr
	}

	It("is the socket's path, from the end that dialled it and from the end that accepted", func() {
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()

		dialed, accepted := pair(addr, ln)
		Expect(accepted.Close()).To(Succeed())
		err = graceful.ReceiveFrom(dialed, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrPeerClosed))
		Expect(addrOf(err)).To(Equal(addr), "the dialled end's remote address")

		dialed, accepted = pair(addr, ln)
		Expect(dialed.Close()).To(Succeed())
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		err = srv.ServeConn(accepted)
		Expect(err).To(MatchError(graceful.ErrPeerClosed))
		Expect(addrOf(err)).To(Equal(addr), "the accepted end's local address")
	})

	It("is empty for an unnamed socket pair", func() {
		a, b := socketPair()
		defer b.Close()
		Expect(a.Close()).To(Succeed())
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		err := srv.ServeConn(b)
		Expect(err).To(MatchError(graceful.ErrPeerClosed))
		Expect(addrOf(err)).To(BeEmpty())
	})
})

var _ = Describe("Meta", func() {
	It("reads nothing, and does not panic, from a nil reader (a descriptor sent without metadata)", func() {
		var m graceful.Meta
		n, err := m.ReadFrom(nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(BeZero())
		Expect(m).NotTo(BeNil())
		Expect(m).To(BeEmpty())
	})

	It("adds the pairs it reads to those m holds, and makes m when it is nil", func() {
		var enc bytes.Buffer
		_, err := graceful.Meta{"b": "2", "c": "3"}.WriteTo(&enc)
		Expect(err).NotTo(HaveOccurred())
		m := graceful.Meta{"a": "1", "b": "old"}
		_, err = m.ReadFrom(bytes.NewReader(enc.Bytes()))
		Expect(err).NotTo(HaveOccurred())
		Expect(m).To(Equal(graceful.Meta{"a": "1", "b": "2", "c": "3"}))
		var fresh graceful.Meta
		_, err = fresh.ReadFrom(bytes.NewReader(enc.Bytes()))
		Expect(err).NotTo(HaveOccurred())
		Expect(fresh).To(Equal(graceful.Meta{"b": "2", "c": "3"}))
	})

	It("fails, wrapped once, on metadata over 64 KiB, and on a broken encoding", func() {
		var m graceful.Meta
		_, err := m.ReadFrom(strings.NewReader(strings.Repeat("x", wire.MaxMetaSize+1)))
		Expect(err).To(MatchError(graceful.ErrMetaTooLarge))
		Expect(err).To(MatchError(graceful.ErrTooLarge))
		Expect(err.Error()).To(Equal(fmt.Sprintf("graceful: read metadata: metadata too large: more than %d bytes", wire.MaxMetaSize)))
		_, err = m.ReadFrom(strings.NewReader("xx"))
		Expect(err).To(MatchError(graceful.ErrMalformed))
		Expect(m).To(BeEmpty())
	})
})

var _ = Describe("Meta at the 64 KiB limit", func() {
	// One pair whose encoding is exactly n bytes: count, two lengths, a
	// one-byte key and the value.
	metaOf := func(n int) graceful.Meta {
		return graceful.Meta{"k": strings.Repeat("v", n-4-8-1)}
	}

	It("reads metadata of exactly 64 KiB, and writes it", func() {
		m := metaOf(wire.MaxMetaSize)
		var enc bytes.Buffer
		_, err := m.WriteTo(&enc)
		Expect(err).NotTo(HaveOccurred())
		Expect(enc.Len()).To(Equal(wire.MaxMetaSize))
		got := graceful.Meta{}
		n, err := got.ReadFrom(&enc)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(int64(wire.MaxMetaSize)))
		Expect(got).To(Equal(m))
	})

	It("sends metadata of exactly 64 KiB, and refuses a byte more", func() {
		fds := pipeFds(2)
		writes := make(chan error, 2)
		srv := &graceful.Server{Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			writes <- w.Write(fds[0], metaOf(wire.MaxMetaSize))
			writes <- w.Write(fds[1], metaOf(wire.MaxMetaSize+1))
		})}
		addr, done := serve(srv)
		err := graceful.Receive(addr, func(int, io.Reader) error { return nil })
		Expect(err).To(HaveOccurred())
		Expect(writes).To(Receive(BeNil()))
		Expect(writes).To(Receive(MatchError(graceful.ErrMetaTooLarge)))
		Eventually(done).Should(Receive(MatchError(graceful.ErrMetaTooLarge)))
	})
})

var _ = Describe("KindOf", func() {
	It("says what the kernel says a descriptor is", func() {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer tcp.Close()
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer udp.Close()
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		for fd, want := range map[int]graceful.Kind{
			rawFd(tcp.(*net.TCPListener)): graceful.KindListener,
			rawFd(udp.(*net.UDPConn)):     graceful.KindPacket,
			rawFd(a):                      graceful.KindStream,
			pipeFds(1)[0]:                 graceful.KindFile,
		} {
			Expect(graceful.KindOf(fd)).To(Equal(want))
		}
		_, err = graceful.KindOf(-1)
		Expect(err).To(MatchError(unix.EBADF))
	})
})

// printfLogger records what each of its methods was called with.
type printfLogger struct{ calls []string }

func (l *printfLogger) Debugf(format string, args ...any) {
	l.calls = append(l.calls, "debug "+fmt.Sprintf(format, args...))
}

func (l *printfLogger) Errorf(format string, args ...any) {
	l.calls = append(l.calls, "error "+fmt.Sprintf(format, args...))
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, os.ErrDeadlineExceeded) {
			l.calls = append(l.calls, "an error value")
		}
	}
}

var _ = Describe("NewSlogLogger", func() {
	It("writes each record as one call to the method of its level, with the attributes as values, and drops the levels missing", func() {
		var p printfLogger
		log := graceful.NewSlogLogger(&p).With("addr", "/x")
		log.Debug("d", "n", 1)
		log.Info("dropped: no Infof")
		log.Warn("w")
		log.WithGroup("g").Error("e 100%", "err", os.ErrDeadlineExceeded)
		Expect(p.calls).To(Equal([]string{
			"debug d addr=/x n=1",
			"error w addr=/x",
			"error e 100% addr=/x g.err=i/o timeout",
			"an error value",
		}))
		Expect(graceful.NewSlogLogger(nil)).To(BeNil())
	})
})

var _ = Describe("a Client's log", func() {
	It("says BUSY, which Receive asks again after, at debug level, and a failure once at error level", func() {
		log := newLineCounter()
		// A step of 500ms: the last attempt, too, must get its BUSY before
		// the session deadline, on a busy machine.
		client := &graceful.Client{Logger: slog.New(log), Timeout: 500 * time.Millisecond}
		addr, done := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {})})
		first := dialRaw(addr)
		first.send(hello())
		first.expect(wire.TypeWelcome)
		err := client.Receive(addr, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrBusy), log.String())
		Eventually(done).Should(Receive(MatchError(graceful.ErrBusy)))
		Expect(log.count(slog.LevelDebug)).To(BeNumerically(">=", 1), log.String())
		Expect(log.count(slog.LevelError)).To(Equal(1), log.String())
		Expect(log.String()).To(ContainSubstring("sender busy; asking again"))
	})
})

var _ = Describe("a Server's log", func() {
	It("writes at most a line a second for a flood of refused peers, and the count of the rest at Close", func() {
		log := newLineCounter()
		done := make(chan error, 64)
		srv := &graceful.Server{
			Handler:   graceful.CallbackHandler(func() {}),
			Logger:    slog.New(log),
			Authorize: func(graceful.PeerCred) error { return errors.New("refused") },
			Done:      func(err error) { done <- err },
		}
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		start := time.Now()
		for range 50 {
			p := dialRaw(addr)
			p.expectError(wire.CodeUnauthorized)
		}
		for range 50 {
			Eventually(done).Should(Receive(MatchError(graceful.ErrUnauthorized)))
		}
		lines := log.count(slog.LevelError)
		Expect(lines).To(BeNumerically("<=", int(time.Since(start)/time.Second)+1), log.String())
		Expect(srv.Close()).To(Succeed())
		Eventually(served).Should(Receive(MatchError(graceful.ErrServerClosed)))
		Expect(log.String()).To(MatchRegexp(`unlogged=\d+`), "Close writes the count")
	})
})

var _ = Describe("errors", func() {
	It("name the operation, the address and, for a timeout, what was waited for: one *OpError", func() {
		missing := socketAddr()
		err := graceful.Receive(missing, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrNoServer))
		Expect(err).To(MatchError(unix.ENOENT))
		var oe *graceful.OpError
		Expect(errors.As(err, &oe)).To(BeTrue())
		Expect(oe.Op).To(Equal("receive"))
		Expect(oe.Addr).To(Equal(missing))
		Expect(err.Error()).To(HavePrefix("graceful: receive " + missing + ": nothing is listening at the address"))
		Expect(strings.Count(err.Error(), "graceful:")).To(Equal(1), "wrapped once: %v", err)

		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		err = (&graceful.Client{Timeout: 100 * time.Millisecond}).Receive(addr, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
		Expect(err.Error()).To(Equal("graceful: receive " + addr + ": no WELCOME within 100ms: recvmsg: i/o timeout"))
		var ne net.Error
		Expect(errors.As(err, &ne)).To(BeTrue())
		Expect(ne.Timeout()).To(BeTrue())
	})
})
