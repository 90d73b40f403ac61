//go:build linux

package graceful_test

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// A Server runs each session on the goroutine that accepted it, waiting on
// its thread, when it serves a *net.UnixListener; these specs pin what
// its Handlers see and what other listeners still get.
var _ = Describe("a Server on a unix listener", func() {
	It("gives the Handler a connection that reaches the socket during the session only, and that it cannot read or write", func() {
		type seen struct {
			conn          net.Conn
			readErr       error
			writeErr      error
			uid           int
			controlErr    error
			rawReadErr    error
			syscallConnOK bool
		}
		got := make(chan seen, 1)
		var last net.Conn // the Handler's conn, on the session's goroutine
		controlAtDone := make(chan error, 1)
		srv := &graceful.Server{Done: func(error) {
			rc, err := last.(syscall.Conn).SyscallConn()
			if err == nil {
				err = rc.Control(func(uintptr) {})
			}
			controlAtDone <- err
		}}
		srv.Handler = graceful.HandlerFunc(func(c net.Conn, w graceful.ResponseWriter) {
			last = c
			s := seen{conn: c, uid: -1}
			_, s.readErr = c.Read(make([]byte, 1))
			_, s.writeErr = c.Write([]byte{0})
			sc, ok := c.(syscall.Conn)
			s.syscallConnOK = ok
			if ok {
				rc, err := sc.SyscallConn()
				Expect(err).NotTo(HaveOccurred())
				s.controlErr = rc.Control(func(fd uintptr) {
					cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
					if err == nil {
						s.uid = int(cred.Uid)
					}
				})
				s.rawReadErr = rc.Read(func(uintptr) bool { return true })
			}
			got <- s
		})
		addr, _ := serve(srv)
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		var atDone error
		Eventually(controlAtDone).Should(Receive(&atDone))
		Expect(atDone).To(MatchError(net.ErrClosed), "the socket is closed by the time the session is reported")

		var s seen
		Eventually(got).Should(Receive(&s))
		Expect(s.readErr).To(MatchError(ContainSubstring("Handler writes to its ResponseWriter")))
		Expect(s.writeErr).To(MatchError(ContainSubstring("Handler writes to its ResponseWriter")))
		Expect(s.syscallConnOK).To(BeTrue(), "the connection offers SyscallConn")
		Expect(s.controlErr).NotTo(HaveOccurred())
		Expect(s.uid).To(Equal(os.Geteuid()), "Control reached the peer's socket")
		Expect(s.rawReadErr).To(HaveOccurred(), "the session owns the byte stream")
		Expect(s.conn.LocalAddr().String()).To(Equal(addr))

		rc, err := s.conn.(syscall.Conn).SyscallConn()
		Expect(err).NotTo(HaveOccurred())
		Expect(rc.Control(func(uintptr) { Fail("Control ran after the session") })).To(MatchError(net.ErrClosed))
	})

	It("ends the session, and leaks nothing, when the Handler closes its connection", func() {
		srv := &graceful.Server{Handler: graceful.HandlerFunc(func(c net.Conn, w graceful.ResponseWriter) {
			Expect(c.Close()).To(Succeed())
		})}
		addr, done := serve(srv)
		calls := 0
		err := graceful.Receive(addr, func(int, io.Reader) error { calls++; return nil })
		Expect(err).To(MatchError(graceful.ErrPeerClosed))
		Expect(calls).To(BeZero())
		Eventually(done).Should(Receive(MatchError(graceful.ErrPeerClosed)))
	})

	It("fails the Writes of a ResponseWriter kept past its session, and the next session gets only its own set", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		fd := rawFd(ln.(*net.TCPListener))
		kept := make(chan graceful.ResponseWriter, 2)
		addr, done := serve(&graceful.Server{Handler: graceful.HandlerFunc(func(c net.Conn, w graceful.ResponseWriter) {
			kept <- w
			Expect(w.Write(fd, nil)).To(Succeed())
		})})
		count := func() (n int) {
			GinkgoHelper()
			Expect(graceful.Receive(addr, func(fd int, _ io.Reader) error { n++; return unix.Close(fd) })).To(Succeed())
			Eventually(done).Should(Receive(BeNil()))
			return n
		}
		Expect(count()).To(Equal(1))
		late := <-kept
		for range wire.MaxFdsPerBatch + 1 { // enough to fill a batch, which would be sent
			Expect(late.Write(fd, nil)).To(MatchError(graceful.ErrSenderFailed))
		}
		Expect(count()).To(Equal(1))
	})

	It("serves receivers one after another, each with the whole set", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		want := identityOf(rawFd(ln.(*net.TCPListener)))
		addr, done := serve(&graceful.Server{Handler: graceful.ListenerHandler(ln, nil)})
		for range 20 {
			var fds []int
			Expect(graceful.Receive(addr, func(fd int, _ io.Reader) error { fds = append(fds, fd); return nil })).To(Succeed())
			Expect(fds).To(HaveLen(1))
			Expect(identityOf(fds[0])).To(Equal(want))
			unix.Close(fds[0])
			Eventually(done).Should(Receive(BeNil()))
		}
	})
})

var _ = Describe("Serve on a unix listener the caller closes", func() {
	It("returns the listener's error, without waiting for Close, and leaks nothing", func() {
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())

		Expect(ln.Close()).To(Succeed())
		Eventually(served).WithTimeout(5 * time.Second).Should(Receive(MatchError(net.ErrClosed)))
		Expect(srv.Close()).To(MatchError(net.ErrClosed), "Close reports the listener it could not close")
	})
})

// wrappedListener is a listener that is not a *net.UnixListener, as a
// caller's middleware would make.
type wrappedListener struct{ net.Listener }

var _ = Describe("a Server on another kind of listener", func() {
	It("serves it through package net, answers BUSY, and stops on Close", func() {
		addr := socketAddr()
		inner, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		conns := make(chan net.Conn, 2)
		done := make(chan error, 4)
		// Done probes the conn of the one session that succeeds: sessions
		// run on goroutines of their own here.
		var (
			mu   sync.Mutex
			last net.Conn
		)
		controlAtDone := make(chan error, 1)
		srv := &graceful.Server{
			Handler: graceful.HandlerFunc(func(c net.Conn, w graceful.ResponseWriter) {
				mu.Lock()
				last = c
				mu.Unlock()
				conns <- c
			}),
			Done: func(err error) {
				if err == nil {
					mu.Lock()
					rc, rerr := last.(syscall.Conn).SyscallConn()
					if rerr == nil {
						rerr = rc.Control(func(uintptr) {})
					}
					mu.Unlock()
					controlAtDone <- rerr
				}
				done <- err
			},
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(wrappedListener{inner}) }()

		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(<-conns).To(BeAssignableToTypeOf(&net.UnixConn{}), "package net's own connection")
		Expect(<-controlAtDone).To(MatchError(net.ErrClosed), "closed by the time the session is reported")

		expectBusyDuringSession(addr, done)

		Expect(srv.Close()).To(Succeed())
		Eventually(served).WithTimeout(5 * time.Second).Should(Receive(MatchError(graceful.ErrServerClosed)))
		Eventually(done).Should(Receive(HaveOccurred()), "the session in progress ended")
	})
})
