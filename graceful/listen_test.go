//go:build linux

package graceful_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

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

	It("lets a new generation take the address while the old one serves, and the old one's Close leaves it alone", func() {
		addr := socketAddr()
		oldDone := make(chan error, 1)
		old := &graceful.Server{Handler: graceful.CallbackHandler(func() {}), Done: func(err error) { oldDone <- err }}
		listen(old, addr)
		Eventually(func() os.FileMode { return socketMode(addr) }).ShouldNot(BeZero())

		// The new generation receives from the old one, then listens.
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(oldDone).Should(Receive(BeNil()))
		before, err := os.Stat(addr)
		Expect(err).NotTo(HaveOccurred())
		newDone := make(chan error, 1)
		next := &graceful.Server{Handler: graceful.CallbackHandler(func() {}), Done: func(err error) { newDone <- err }}
		listen(next, addr)
		Eventually(func() bool {
			st, err := os.Stat(addr)
			return err == nil && !os.SameFile(st, before)
		}).Should(BeTrue())

		Expect(old.Close()).To(Succeed())
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(newDone).Should(Receive(BeNil()))
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
		Expect(buf.String()).To(ContainSubstring("received 0 descriptors"))
		Expect(buf.String()).To(ContainSubstring("handed descriptors"))
	})

	It("goes to a value with Errorf, and ResponseWriter logs errors of the Handler helpers", func() {
		var log recordingLogger
		fake, _ := net.Pipe()
		defer fake.Close()
		addr, done := serve(&graceful.Server{Handler: graceful.ConnHandler(fake, nil), Logger: &log, Timeout: time.Second})
		err := graceful.Receive(addr, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrSenderFailed))
		Eventually(done).Should(Receive(MatchError(graceful.ErrNotFiler)))
		Expect(log.String()).To(ContainSubstring("has no descriptor"))
	})
})

type recordingLogger struct{ bytes.Buffer }

func (l *recordingLogger) Errorf(format string, args ...any) {
	l.WriteString(fmt.Sprintf(format, args...) + "\n")
}
