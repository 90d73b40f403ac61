//go:build linux

package graceful_test

import (
	"io"
	"net"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Receive and Server sessions run on blocking sockets with kernel
// timeouts; these specs pin what that must not change.
var _ = Describe("sessions on the library's own sockets", func() {
	It("Receive gives up on a sender that trickles a frame, at the deadline for the whole frame", func() {
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			defer GinkgoRecover()
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			p := newRawPeer(c.(*net.UnixConn))
			p.expect(wire.TypeHello)
			// An ERROR frame whose 1000-byte message comes a byte at a
			// time, each well within the timeout: only a deadline for the
			// whole frame ends the wait before the message does (50 s).
			frame := wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeSenderFailed, Message: strings.Repeat("x", 1000)})
			if _, err := c.Write(frame[:12]); err != nil {
				return
			}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for _, b := range frame[12:] {
				select {
				case <-tick.C:
				case <-stop:
					return
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
			}
			<-stop
		}()
		client := &graceful.Client{Timeout: 200 * time.Millisecond}
		result := make(chan error, 1)
		go func() { result <- client.Receive(addr, func(int, io.Reader) error { return nil }) }()
		Eventually(result).WithTimeout(10 * time.Second).Should(Receive(MatchError(os.ErrDeadlineExceeded)))
	})

	It("Server.Close wakes a session blocked on its socket instead of waiting out the timeout", func() {
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {}), Timeout: time.Hour}
		addr, done := serve(srv)
		p := dialRaw(addr)
		p.send(hello())
		p.expect(wire.TypeWelcome)
		closed := make(chan error, 1)
		go func() { closed <- srv.Close() }()
		Eventually(closed).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
		Eventually(done).Should(Receive(MatchError(graceful.ErrPeerClosed)))
	})

	It("Receive asks a busy sender again until it is free", func() {
		addr, done := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {})})
		first := dialRaw(addr)
		first.send(hello())
		first.expect(wire.TypeWelcome)

		received := make(chan error, 1)
		go func() { received <- graceful.Receive(addr, func(int, io.Reader) error { return nil }) }()
		Eventually(done).Should(Receive(MatchError(graceful.ErrBusy)), "the second receiver was told BUSY")
		first.c.Close()
		Eventually(received).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
	})

	It("Receive reports ErrBusy, with the timeout, when a sender that said BUSY does not answer the next HELLO in time", func() {
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		answered := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(answered)
			c, err := ln.Accept()
			Expect(err).NotTo(HaveOccurred())
			defer c.Close()
			p := newRawPeer(c.(*net.UnixConn))
			p.expect(wire.TypeHello)
			p.send(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeBusy, Message: "busy"}))
			again, err := ln.Accept()
			Expect(err).NotTo(HaveOccurred())
			defer again.Close()
			newRawPeer(again.(*net.UnixConn)).expect(wire.TypeHello)
			// and no answer: the receiver's step passes
			_, err = again.Read(make([]byte, 1))
			Expect(err).To(MatchError(io.EOF), "the receiver hung up")
		}()
		client := &graceful.Client{Timeout: 200 * time.Millisecond}
		err = client.Receive(addr, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrBusy))
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
		Expect(err).To(MatchError(ContainSubstring("BUSY answers: 1, then none to the next HELLO: no WELCOME within 200ms")))
		Eventually(answered).Should(BeClosed())
	})

	It("Receive reports ErrBusy when the sender stays busy past the timeout", func() {
		addr, _ := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {})})
		first := dialRaw(addr)
		first.send(hello())
		first.expect(wire.TypeWelcome)
		// Each attempt, the last one too, has to get its BUSY before the
		// session deadline (3 steps): a step of 500ms leaves it hundreds
		// of milliseconds on a busy machine.
		client := &graceful.Client{Timeout: 500 * time.Millisecond}
		Expect(client.Receive(addr, func(int, io.Reader) error { return nil })).To(MatchError(graceful.ErrBusy))
	})
})
