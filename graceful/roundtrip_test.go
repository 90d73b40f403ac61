//go:build linux

package graceful_test

import (
	"bytes"
	"io"
	"net"
	"os"
	"runtime"
	"time"
	"weak"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// got is one descriptor as a callback saw it.
type got struct {
	fd      int
	id      identity
	hasMeta bool
	meta    []byte
}

// collect returns a callback that records every descriptor and keeps it
// open; the descriptors are closed when the spec ends.
func collect(into *[]got) graceful.ReceiveCallback {
	return func(fd int, meta io.Reader) error {
		g := got{fd: fd, id: identityOf(fd), hasMeta: meta != nil}
		if meta != nil {
			b, err := io.ReadAll(meta)
			if err != nil {
				return err
			}
			g.meta = b
		}
		*into = append(*into, g)
		DeferCleanup(func() { os.NewFile(uintptr(fd), "received").Close() })
		return nil
	}
}

var _ = Describe("a set handed from a Server to Receive", func() {
	It("arrives whole, in order, as the same kernel objects, with metadata", func() {
		tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer tcpLn.Close()
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer udp.Close()
		file, err := os.CreateTemp(GinkgoT().TempDir(), "f")
		Expect(err).NotTo(HaveOccurred())
		defer file.Close()
		dialed, err := net.Dial("tcp", tcpLn.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		defer dialed.Close()

		srv := &graceful.Server{Handler: graceful.SequenceHandler(
			graceful.ListenerHandler(tcpLn, nil),
			graceful.PacketConnHandler(udp, graceful.Meta{}),
			graceful.FileHandler(file, graceful.Meta{"name": file.Name()}),
			graceful.ConnHandler(dialed.(*net.TCPConn), bytes.NewBufferString("raw bytes")),
		)}
		addr, done := serve(srv)

		var set []got
		Expect(graceful.Receive(addr, collect(&set))).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))

		Expect(set).To(HaveLen(4))
		Expect(set[0].id).To(Equal(identityOf(rawFd(tcpLn.(*net.TCPListener)))))
		Expect(set[1].id).To(Equal(identityOf(rawFd(udp.(*net.UDPConn)))))
		Expect(set[2].id).To(Equal(identityOf(int(file.Fd()))))
		Expect(set[3].id).To(Equal(identityOf(rawFd(dialed.(*net.TCPConn)))))

		Expect(set[0].hasMeta).To(BeFalse(), "no metadata must stay distinct from empty metadata")
		Expect(set[1].hasMeta).To(BeTrue())
		m, err := graceful.MetaFrom(bytes.NewReader(set[1].meta))
		Expect(err).NotTo(HaveOccurred())
		Expect(m).To(BeEmpty())
		m, err = graceful.MetaFrom(bytes.NewReader(set[2].meta))
		Expect(err).NotTo(HaveOccurred())
		Expect(m).To(Equal(graceful.Meta{"name": file.Name()}))
		Expect(string(set[3].meta)).To(Equal("raw bytes"))
	})

	It("gives descriptors that are close-on-exec, and leaves the sender's sockets non-blocking", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		addr, done := serve(&graceful.Server{Handler: graceful.ListenerHandler(ln, nil)})

		var set []got
		Expect(graceful.Receive(addr, collect(&set))).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		cloexec, _ := fdFlags(set[0].fd)
		Expect(cloexec).To(BeTrue(), "received descriptor must be close-on-exec")
		_, nonblock := fdFlags(rawFd(ln.(*net.TCPListener)))
		Expect(nonblock).To(BeTrue(), "the shared description must stay non-blocking")

		// A blocking listener would leave Accept stuck in accept4 and Close
		// would never wake it.
		accepted := make(chan error, 1)
		go func() {
			_, err := ln.Accept()
			accepted <- err
		}()
		Consistently(accepted).WithTimeout(50 * time.Millisecond).ShouldNot(Receive())
		Expect(ln.Close()).To(Succeed())
		Eventually(accepted).WithTimeout(5 * time.Second).Should(Receive(MatchError(net.ErrClosed)))
	})

	It("keeps a written listener alive until it is sent, even when nothing else references it", func() {
		var (
			want   identity
			fd     int
			weakLn weak.Pointer[net.TCPListener]
		)
		handler := graceful.SequenceHandler(
			graceful.HandlerFunc(func(c net.Conn, w graceful.ResponseWriter) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				Expect(err).NotTo(HaveOccurred())
				fd = rawFd(ln.(*net.TCPListener))
				want = identityOf(fd)
				weakLn = weak.Make(ln.(*net.TCPListener))
				graceful.ListenerHandler(ln, nil).Handle(c, w)
			}),
			graceful.CallbackHandler(func() {
				runtime.GC()
				if weakLn.Value() == nil {
					// Collected: wait for its finalizer to close the
					// descriptor, so that the send below must fail.
					Eventually(func() error {
						_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
						return err
					}).Should(MatchError(unix.EBADF))
				}
			}),
		)
		addr, done := serve(&graceful.Server{Handler: handler})
		var set []got
		Expect(graceful.Receive(addr, collect(&set))).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(1))
		Expect(set[0].id).To(Equal(want))
		if ln := weakLn.Value(); ln != nil {
			ln.Close()
		}
	})

	It("hands over a set of zero descriptors", func() {
		addr, done := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {})})
		calls := 0
		Expect(graceful.Receive(addr, func(int, io.Reader) error { calls++; return nil })).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(calls).To(BeZero())
	})
})
