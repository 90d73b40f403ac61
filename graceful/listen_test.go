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
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

var _ = Describe("ListenAndServe", func() {
	listen := func(srv *graceful.Server, addr string) <-chan error {
		served := make(chan error, 1)
		go func() { served <- srv.ListenAndServe(addr) }()
		DeferCleanup(func() {
			srv.Close()
			Eventually(served).Should(Receive(MatchError(graceful.ErrServerClosed)))
		})
		return served
	}
	socketMode := func(addr string) os.FileMode {
		st, err := os.Stat(addr)
		if err != nil {
			return 0
		}
		return st.Mode()
	}

	It("creates the socket with mode 0600", func() {
		addr := socketAddr()
		listen(&graceful.Server{Handler: graceful.CallbackHandler(func() {})}, addr)
		Eventually(func() os.FileMode { return socketMode(addr) }).Should(Equal(os.ModeSocket | 0o600))
	})

	It("waits, in a new generation, for the old one to close its Server from Done, then takes the address; the old one's Close leaves it", func() {
		addr := socketAddr()
		old := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		old.Done = func(err error) {
			if err == nil { // the restart recipe: the successor has the set
				old.Close()
			}
		}
		oldServed := make(chan error, 1)
		go func() { oldServed <- old.ListenAndServe(addr) }()
		Eventually(func() os.FileMode { return socketMode(addr) }).ShouldNot(BeZero())
		before, err := os.Stat(addr)
		Expect(err).NotTo(HaveOccurred())

		// The new generation receives from the old one, then listens.
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		newDone := make(chan error, 1)
		next := &graceful.Server{Handler: graceful.CallbackHandler(func() {}), Done: func(err error) { newDone <- err }}
		listen(next, addr)
		Eventually(oldServed).WithTimeout(5 * time.Second).Should(Receive(MatchError(graceful.ErrServerClosed)))
		Eventually(func() bool {
			st, err := os.Stat(addr)
			return err == nil && !os.SameFile(st, before)
		}).WithTimeout(5*time.Second).Should(BeTrue(), "the new generation's socket is at the address")

		Expect(old.Close()).To(Succeed())
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(newDone).Should(Receive(BeNil()))
	})

	It("gives up with ErrAddrInUse when a server answers at the address longer than its Timeout", func() {
		addr := socketAddr()
		listen(&graceful.Server{Handler: graceful.CallbackHandler(func() {})}, addr)
		Eventually(func() os.FileMode { return socketMode(addr) }).ShouldNot(BeZero())
		next := &graceful.Server{Handler: graceful.CallbackHandler(func() {}), Timeout: 200 * time.Millisecond}
		err := next.ListenAndServe(addr)
		Expect(err).To(MatchError(graceful.ErrAddrInUse))
		Expect(err).To(MatchError(ContainSubstring("a server answers there")))
		Expect(err).To(MatchError(ContainSubstring(addr)))
	})

	It("is Listen followed by Serve, for a program that must know when it is reachable", func() {
		addr := socketAddr()
		ln, err := graceful.Listen(addr)
		Expect(err).NotTo(HaveOccurred())
		Expect(socketMode(addr)).To(Equal(os.ModeSocket | 0o600))
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Expect(srv.Close()).To(Succeed())
		Eventually(served).Should(Receive(MatchError(graceful.ErrServerClosed)))
	})

	It("leaves nobody listening after Close: a receiver is told there is no server", func() {
		addr := socketAddr()
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		listen(srv, addr)
		Eventually(func() os.FileMode { return socketMode(addr) }).ShouldNot(BeZero())
		Expect(srv.Close()).To(Succeed())
		err := graceful.Receive(addr, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrNoServer))
	})
})

var _ = Describe("logging", func() {
	It("goes to a *slog.Logger", func() {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		addr, done := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {}), Logger: log})
		Expect((&graceful.Client{Logger: log}).Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(buf.String()).To(ContainSubstring("received the set"))
		Expect(buf.String()).To(ContainSubstring("descriptors=0"))
		Expect(buf.String()).To(ContainSubstring("handed the set"))
	})

	It("goes to a value with Errorf, through NewSlogLogger, once for a session that failed in a Handler helper", func() {
		var log recordingLogger
		fake, _ := net.Pipe()
		defer fake.Close()
		addr, done := serve(&graceful.Server{Handler: graceful.ConnHandler(fake, nil), Logger: graceful.NewSlogLogger(&log), Timeout: time.Second})
		err := graceful.Receive(addr, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrSenderFailed))
		Eventually(done).Should(Receive(MatchError(graceful.ErrNotFiler)))
		Expect(strings.Count(log.String(), "has no descriptor")).To(Equal(1), log.String())
	})
})

type recordingLogger struct{ bytes.Buffer }

func (l *recordingLogger) Errorf(format string, args ...any) {
	l.WriteString(fmt.Sprintf(format, args...) + "\n")
}

var _ = Describe("Listen", func() {
	// serveOn serves a Server that sends nothing on ln until the spec
	// ends; Done's errors arrive on the channel it returns.
	serveOn := func(ln net.Listener) <-chan error {
		GinkgoHelper()
		done := make(chan error, 16)
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {}), Done: func(err error) { done <- err }}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		DeferCleanup(func() {
			Expect(srv.Close()).To(Succeed())
			Eventually(served).Should(Receive(MatchError(graceful.ErrServerClosed)))
		})
		return done
	}
	receiveNothing := func(int, io.Reader) error { return nil }

	DescribeTable("leaves what is at the address alone unless it is a stale socket, and says what is there",
		func(what string, place func(addr string) (check func())) {
			addr := socketAddr()
			check := place(addr)
			ln, err := graceful.Listen(addr)
			Expect(err).To(MatchError(graceful.ErrAddrInUse))
			Expect(ln).To(BeNil())
			Expect(err).To(MatchError(ContainSubstring(what)))
			Expect(err).To(MatchError(ContainSubstring(addr)))
			var oe *graceful.OpError
			Expect(errors.As(err, &oe)).To(BeTrue())
			Expect(oe.Op).To(Equal("listen"))
			check()
			entries, err := os.ReadDir(filepath.Dir(addr))
			Expect(err).NotTo(HaveOccurred())
			Expect(entries).To(HaveLen(1), "no temporary directory left behind")
		},
		Entry("a regular file, its content intact", "a regular file", func(addr string) func() {
			Expect(os.WriteFile(addr, []byte("precious"), 0o644)).To(Succeed())
			return func() {
				b, err := os.ReadFile(addr)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(b)).To(Equal("precious"))
			}
		}),
		Entry("a FIFO", "a FIFO", func(addr string) func() {
			Expect(unix.Mkfifo(addr, 0o600)).To(Succeed())
			return func() {
				st, err := os.Lstat(addr)
				Expect(err).NotTo(HaveOccurred())
				Expect(st.Mode().Type()).To(Equal(os.ModeNamedPipe))
			}
		}),
		Entry("a directory", "a directory", func(addr string) func() {
			Expect(os.Mkdir(addr, 0o700)).To(Succeed())
			return func() {
				st, err := os.Lstat(addr)
				Expect(err).NotTo(HaveOccurred())
				Expect(st.IsDir()).To(BeTrue())
			}
		}),
		Entry("a symbolic link, not followed", "a symbolic link", func(addr string) func() {
			target := filepath.Join(GinkgoT().TempDir(), "target")
			Expect(os.WriteFile(target, []byte("precious"), 0o644)).To(Succeed())
			Expect(os.Symlink(target, addr)).To(Succeed())
			return func() {
				got, err := os.Readlink(addr)
				Expect(err).NotTo(HaveOccurred())
				Expect(got).To(Equal(target))
				b, err := os.ReadFile(target)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(b)).To(Equal("precious"))
			}
		}),
		Entry("a socket a server answers on, which keeps serving", "a server answers there", func(addr string) func() {
			ln, err := net.Listen("unix", addr)
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(ln.Close)
			return func() {
				c, err := net.Dial("unix", addr)
				Expect(err).NotTo(HaveOccurred())
				defer c.Close()
				Expect(ln.(*net.UnixListener).SetDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
				a, err := ln.Accept()
				Expect(err).NotTo(HaveOccurred())
				a.Close()
			}
		}),
	)

	It("replaces a stale socket, one a server left behind", func() {
		addr := socketAddr()
		stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		Expect(err).NotTo(HaveOccurred())
		stale.SetUnlinkOnClose(false)
		Expect(stale.Close()).To(Succeed())
		Expect(graceful.Receive(addr, receiveNothing)).To(MatchError(graceful.ErrNoServer))

		ln, err := graceful.Listen(addr)
		Expect(err).NotTo(HaveOccurred())
		serveOn(ln)
		Expect(graceful.Receive(addr, receiveNothing)).To(Succeed())
		st, err := os.Stat(addr)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode()).To(Equal(os.ModeSocket | 0o600))
	})

	It("works at a path of 107 bytes, the most sun_path holds, and at longer ones (108 bytes, the first too long, and more), which Receive and Dial reach too", func() {
		dir := GinkgoT().TempDir()
		at107 := filepath.Join(dir, strings.Repeat("x", 107-len(dir)-1))
		Expect(at107).To(HaveLen(107))
		at108 := at107[:len(at107)-1] + "zz"
		deep := filepath.Join(dir, strings.Repeat("d", 100))
		Expect(os.Mkdir(deep, 0o700)).To(Succeed())
		long := filepath.Join(deep, strings.Repeat("y", 100))
		for _, addr := range []string{at107, at108, long} {
			ln, err := graceful.Listen(addr)
			Expect(err).NotTo(HaveOccurred(), "%d bytes", len(addr))
			done := serveOn(ln)
			Expect(graceful.Receive(addr, receiveNothing)).To(Succeed(), "%d bytes", len(addr))
			Eventually(done).Should(Receive(BeNil()))
			c, err := graceful.Dial(addr)
			Expect(err).NotTo(HaveOccurred())
			Expect(graceful.ReceiveFrom(c, receiveNothing)).To(Succeed())
			Expect(graceful.Ready(c)).To(Succeed())
			c.Close()
		}
	})

	It("replaces a stale socket at a path of 108 bytes, which it checks through /proc/self/fd", func() {
		dir := GinkgoT().TempDir()
		at108 := filepath.Join(dir, strings.Repeat("x", 108-len(dir)-1))
		Expect(at108).To(HaveLen(108))
		ln, err := graceful.Listen(at108)
		Expect(err).NotTo(HaveOccurred())
		Expect(ln.Close()).To(Succeed()) // leaves the file: a stale socket
		ln, err = graceful.Listen(at108)
		Expect(err).NotTo(HaveOccurred())
		done := serveOn(ln)
		Expect(graceful.Receive(at108, receiveNothing)).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
	})

	It("takes an abstract address, @name, on every entry point, and creates no file", func() {
		wd, err := os.Getwd()
		Expect(err).NotTo(HaveOccurred())
		addr := abstractAddr()
		ln, err := graceful.Listen(addr)
		Expect(err).NotTo(HaveOccurred())
		Expect(ln.Addr().String()).To(Equal(addr))
		_, err = os.Lstat(filepath.Join(wd, addr))
		Expect(err).To(MatchError(os.ErrNotExist), "no file named %s", addr)
		done := serveOn(ln)

		By("Listen again: the name is bound")
		_, err = graceful.Listen(addr)
		Expect(err).To(MatchError(graceful.ErrAddrInUse))

		By("Receive and Dial")
		Expect(graceful.Receive(addr, receiveNothing)).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		c, err := graceful.Dial(addr)
		Expect(err).NotTo(HaveOccurred())
		Expect(graceful.ReceiveFrom(c, receiveNothing)).To(Succeed())
		Expect(graceful.Ready(c)).To(Succeed())
		c.Close()

		By("ListenAndServe")
		other := abstractAddr()
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		served := make(chan error, 1)
		go func() { served <- srv.ListenAndServe(other) }()
		Eventually(func() error { return graceful.Receive(other, receiveNothing) }).Should(Succeed())
		Expect(srv.Close()).To(Succeed())
		Eventually(served).Should(Receive(MatchError(graceful.ErrServerClosed)))
		Expect(graceful.Receive(other, receiveNothing)).To(MatchError(graceful.ErrNoServer))

		By("Send, to a receiver that listens on an abstract address (with package net: Listen's sockets refuse descriptors)")
		rcvAddr := abstractAddr()
		rln, err := net.Listen("unix", rcvAddr)
		Expect(err).NotTo(HaveOccurred())
		defer rln.Close()
		var set []got
		received := make(chan error, 1)
		go func() {
			c, err := rln.Accept()
			if err != nil {
				received <- err
				return
			}
			defer c.Close()
			received <- graceful.ReceiveFrom(c, collect(&set))
		}()
		fds := pipeFds(1)
		Expect(graceful.Send(rcvAddr, fds[0], nil)).To(Succeed())
		Eventually(received).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(1))
		Expect(set[0].id).To(Equal(identityOf(fds[0])))
	})
})
