//go:build linux

package graceful_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

var _ = Describe("sending on a connection of one's own", func() {
	It("follows the original README: accept, write application data, then send listener and file", func() {
		addr := socketAddr()
		unixLn, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer unixLn.Close()
		tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer tcpLn.Close()
		file, err := os.CreateTemp(GinkgoT().TempDir(), "state")
		Expect(err).NotTo(HaveOccurred())
		defer file.Close()

		sent := make(chan error, 1)
		go func() {
			conn, err := unixLn.Accept()
			if err != nil {
				sent <- err
				return
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("app-data\n")); err != nil {
				sent <- err
				return
			}
			if err := graceful.SendListenerTo(conn, tcpLn, nil); err != nil {
				sent <- err
				return
			}
			sent <- graceful.SendFileTo(conn, file, graceful.Meta{"name": file.Name()})
		}()

		conn, err := graceful.Dial(addr)
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		data := make([]byte, len("app-data\n"))
		Expect(conn.SetReadDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
		_, err = io.ReadFull(conn, data)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(data)).To(Equal("app-data\n"))

		var set []got
		Expect(graceful.ReceiveAllFrom(conn, collect(&set))).To(Succeed())
		Eventually(sent).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(2))
		Expect(set[0].id).To(Equal(identityOf(rawFd(tcpLn.(*net.TCPListener)))))
		Expect(set[1].id).To(Equal(identityOf(int(file.Fd()))))
		m, err := graceful.MetaFrom(bytes.NewReader(set[1].meta))
		Expect(err).NotTo(HaveOccurred())
		Expect(m["name"]).To(Equal(file.Name()))
	})

	It("SendConnTo writes the connection to dst, not to itself", func() {
		tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer tcpLn.Close()
		tcpConn, err := net.Dial("tcp", tcpLn.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		defer tcpConn.Close()

		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		sent := make(chan error, 1)
		go func() { sent <- graceful.SendConnTo(b, tcpConn, graceful.Meta{"peer": "x"}) }()
		var set []got
		Expect(graceful.ReceiveFrom(a, collect(&set))).To(Succeed())
		Eventually(sent).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(1))
		Expect(set[0].id).To(Equal(identityOf(rawFd(tcpConn.(*net.TCPConn)))))
	})

	It("Send dials a listening receiver; SendTo and SendPacketConnTo return only after the receiver acknowledged", func() {
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer udp.Close()
		pipe := pipeFds(1)

		var set []got
		received := make(chan error, 1)
		go func() {
			defer GinkgoRecover()
			conn, err := ln.Accept()
			if err != nil {
				received <- err
				return
			}
			defer conn.Close()
			received <- graceful.ReceiveAllFrom(conn, collect(&set))
		}()

		conn, err := graceful.Dial(addr)
		Expect(err).NotTo(HaveOccurred())
		Expect(graceful.SendTo(conn, pipe[0], nil)).To(Succeed())
		Expect(graceful.SendPacketConnTo(conn, udp, nil)).To(Succeed())
		Expect(conn.Close()).To(Succeed())
		Eventually(received).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(2))
		Expect(set[0].id).To(Equal(identityOf(pipe[0])))
		Expect(set[1].id).To(Equal(identityOf(rawFd(udp.(*net.UDPConn)))))

		go func() {
			conn, err := ln.Accept()
			if err != nil {
				received <- err
				return
			}
			defer conn.Close()
			received <- graceful.ReceiveFrom(conn, collect(&set))
		}()
		Expect(graceful.Send(addr, pipe[0], graceful.Meta{})).To(Succeed())
		Eventually(received).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(3))
	})

	It("ReceiveAllFrom fails with ErrPeerClosed when not even one set came", func() {
		a, b := socketPair()
		defer a.Close()
		Expect(b.Close()).To(Succeed())
		Expect(graceful.ReceiveAllFrom(a, func(int, io.Reader) error { return nil })).To(MatchError(graceful.ErrPeerClosed))
	})

	It("reports a value without a descriptor", func() {
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		fake, _ := net.Pipe()
		defer fake.Close()
		result := make(chan error, 1)
		go func() { result <- graceful.SendConnTo(b, fake, nil) }()
		err := graceful.ReceiveFrom(a, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrSenderFailed))
		Eventually(result).Should(Receive(MatchError(graceful.ErrNotFiler)))
	})
})

var _ = Describe("SendTo's result", func() {
	It("is the receiver's refusal when the descriptor was written but rejected", func() {
		fds := pipeFds(1)
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		received := make(chan error, 1)
		go func() {
			received <- graceful.ReceiveFrom(a, func(fd int, _ io.Reader) error {
				os.NewFile(uintptr(fd), "received").Close()
				return errors.New("not today")
			})
		}()
		err := graceful.SendTo(b, fds[0], nil)
		Expect(err).To(MatchError(graceful.ErrRejected))
		Expect(err).To(MatchError(ContainSubstring("not today")))
		Eventually(received).Should(Receive(MatchError(graceful.ErrRejected)))
	})
})

var _ = Describe("a connection of one's own, while a session runs on it", func() {
	It("refuses descriptors (SO_PASSRIGHTS), and takes them again once ServeConn returns", func() {
		a, b := socketPair()
		defer b.Close()
		if _, known, _ := fdpass.PassRights(b); !known {
			Skip("this kernel has no SO_PASSRIGHTS (Linux 6.16 and later)")
		}
		type rights struct{ on, known bool }
		during := make(chan rights, 1)
		srv := &graceful.Server{Handler: graceful.HandlerFunc(func(conn net.Conn, _ graceful.ResponseWriter) {
			on, known, err := fdpass.PassRights(conn.(*net.UnixConn))
			Expect(err).NotTo(HaveOccurred())
			during <- rights{on, known}
		})}
		served := make(chan error, 1)
		go func() { served <- srv.ServeConn(b) }()
		Expect(graceful.ReceiveFrom(a, func(int, io.Reader) error { return nil })).To(Succeed())
		Expect(graceful.Ready(a)).To(Succeed())
		Expect(a.Close()).To(Succeed())
		Eventually(served).Should(Receive(BeNil()))
		Expect(during).To(Receive(Equal(rights{on: false, known: true})))
		on, _, err := fdpass.PassRights(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(on).To(BeTrue(), "SO_PASSRIGHTS was not turned back on")
	})
})

var _ = Describe("Server.ServeConn on a connection of one's own", func() {
	It("sends a whole set per session until the receiver closes, and leaves the connection open", func() {
		fds := pipeFds(300)
		srv := &graceful.Server{
			Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
				for _, fd := range fds {
					Expect(w.Write(fd, nil)).To(Succeed())
				}
			}),
		}
		done := make(chan error, 4)
		srv.Done = func(err error) { done <- err }
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		served := make(chan error, 1)
		go func() { served <- srv.ServeConn(b) }()

		for range 2 {
			var set []got
			Expect(graceful.ReceiveFrom(a, collect(&set))).To(Succeed())
			Expect(graceful.Ready(a)).To(Succeed())
			Eventually(done).Should(Receive(BeNil()))
			Expect(set).To(HaveLen(300))
			Expect(set[299].id).To(Equal(identityOf(fds[299])))
		}
		Expect(a.Close()).To(Succeed())
		Eventually(served).Should(Receive(BeNil()))
		Consistently(done).ShouldNot(Receive(), "a close between sessions is not a failed session")
		_, err := b.Write([]byte{0})
		Expect(err).To(HaveOccurred(), "the peer is gone, but b itself must still be open")
		Expect(err).NotTo(MatchError(net.ErrClosed))
	})

	It("serves a HELLO where READY is due as the next session; the first is reported not ready (RDY-2, RDY-5)", func() {
		fds := pipeFds(2)
		p, done, served := serveConnTo(graceful.SequenceHandler(graceful.FdHandler(fds[0], nil), graceful.FdHandler(fds[1], nil)))
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(2)))
		p.send(append(wire.AppendCount(nil, wire.TypeAck, 2), hello()...)) // HELLO where READY is due
		Eventually(done).Should(Receive(MatchError(graceful.ErrNotReady)))
		Expect(readSet(p)).To(Equal(uint32(2)), "the HELLO began a second session")
		p.send(append(wire.AppendCount(nil, wire.TypeAck, 2), wire.AppendReady(nil)...))
		Eventually(done).Should(Receive(BeNil()))
		p.c.Close()
		Eventually(served).Should(Receive(BeNil()))
	})

	It("reads no byte past READY: a HELLO written with it begins the next session", func() {
		fds := pipeFds(1)
		p, done, served := serveConnTo(graceful.FdHandler(fds[0], nil))
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(1)))
		p.send(append(wire.AppendReady(wire.AppendCount(nil, wire.TypeAck, 1)), hello()...))
		secondSessionThenClose(p, done, served)
	})

	It("fails with ErrPeerClosed when the peer closes before its first byte, and Done does not hear of it", func() {
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		done := make(chan error, 4)
		srv.Done = func(err error) { done <- err }
		a, b := socketPair()
		defer b.Close()
		Expect(a.Close()).To(Succeed())
		err := srv.ServeConn(b)
		Expect(err).To(MatchError(graceful.ErrPeerClosed))
		Expect(err).To(MatchError(ContainSubstring("closed before HELLO")))
		Expect(done).NotTo(Receive(), "Done runs before ServeConn returns: it was not called")
	})

	It("reads no byte past a READY that comes in pieces: the next HELLO stays for the next session", func() {
		fds := pipeFds(1)
		srv := &graceful.Server{Handler: graceful.FdHandler(fds[0], nil)}
		done := make(chan error, 4)
		srv.Done = func(err error) { done <- err }
		a, b := socketPair()
		defer b.Close()
		served := make(chan error, 1)
		go func() { served <- srv.ServeConn(b) }()
		// unread is how many bytes wait in b's receive queue.
		unread := func() int {
			n, err := unix.IoctlGetInt(rawFd(b), unix.SIOCINQ)
			Expect(err).NotTo(HaveOccurred())
			return n
		}

		p := newRawPeer(a)
		defer p.close()
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(1)))
		ready := wire.AppendReady(nil)
		p.send(append(wire.AppendCount(nil, wire.TypeAck, 1), ready[:4]...))
		Eventually(unread).Should(BeZero(), "the server took ACK and half of READY")
		p.send(append(ready[4:], hello()...))
		secondSessionThenClose(p, done, served)
	})
})

// serveConnTo runs a Server with h on one end of a socket pair and plays
// the receiver by hand on the other: what Done hears, and what ServeConn
// returns, arrive on done and served.
func serveConnTo(h graceful.Handler) (p *rawPeer, done, served chan error) {
	srv := &graceful.Server{Handler: h}
	done = make(chan error, 4)
	srv.Done = func(err error) { done <- err }
	a, b := socketPair()
	DeferCleanup(b.Close)
	served = make(chan error, 1)
	go func() { served <- srv.ServeConn(b) }()
	p = newRawPeer(a)
	DeferCleanup(p.close)
	return p, done, served
}

// secondSessionThenClose expects the first session on p to end well and
// the HELLO sent with its READY to have begun a second one, finishes that
// one, and closes p: ServeConn returns nil.
func secondSessionThenClose(p *rawPeer, done, served chan error) {
	GinkgoHelper()
	Eventually(done).Should(Receive(BeNil()))
	Expect(readSet(p)).To(Equal(uint32(1)), "the HELLO began a second session")
	p.send(wire.AppendReady(wire.AppendCount(nil, wire.TypeAck, 1)))
	Eventually(done).Should(Receive(BeNil()))
	p.c.Close()
	Eventually(served).Should(Receive(BeNil()))
}
