package fdpass_test

import (
	"errors"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// blockingPair is a connected pair of sockets: the first, non-blocking, as
// a Blocking, the second as a raw blocking descriptor. Both are closed at
// the end of the spec.
func blockingPair() (*fdpass.Blocking, int) {
	GinkgoHelper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	Expect(err).NotTo(HaveOccurred())
	err = unix.SetNonblock(fds[0], true)
	Expect(err).NotTo(HaveOccurred())
	b := fdpass.NewBlocking(fds[0])
	DeferCleanup(func() { b.Close(); unix.Close(fds[1]) })
	return b, fds[1]
}

var _ = Describe("Blocking's waits", func() {
	It("wakes a read waiting on the thread when the socket is shut down", func() {
		b, _ := blockingPair()
		onceThreadIn(unix.SYS_PPOLL, b.Shutdown)
		_, _, err := b.Read(make([]byte, 16), make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).To(MatchError(io.EOF), "woken by the shutdown, not by the deadline")
	})

	It("waits in poll for the answer to its own write, and reads it whole", func() {
		b, peer := blockingPair()
		Expect(b.Write([]byte("ping"), nil, time.Now().Add(stepTimeout))).To(Succeed())
		onceThreadIn(unix.SYS_PPOLL, func() { // the read is waiting
			p := make([]byte, 4)
			Expect(unix.Read(peer, p)).To(Equal(4))
			Expect(unix.Write(peer, []byte("pong"))).To(Equal(4))
		})
		p := make([]byte, 16)
		n, _, err := b.Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("pong"))
	})
})

var _ = Describe("Blocking's reads and writes", func() {
	It("wait in poll for bytes that are not there yet, and return them", func() {
		b, peer := blockingPair()
		onceThreadIn(unix.SYS_PPOLL, func() { // the read waits: nothing was written
			Expect(unix.Write(peer, []byte("late"))).To(Equal(4))
		})
		p := make([]byte, 16)
		n, fds, err := b.Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(fds).To(BeEmpty())
		Expect(string(p[:n])).To(Equal("late"))
	})

	It("go on waiting when a signal interrupts poll (EINTR)", func() {
		b, peer := blockingPair()
		// SIGUSR1, which the runtime does not send itself: its arrival on
		// sig says the handler ran, so poll returned EINTR before the
		// bytes were written.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR1)
		defer signal.Stop(sig)
		go func() {
			defer GinkgoRecover()
			var tid int
			Eventually(func() (ok bool) { tid, ok = threadIn(unix.SYS_PPOLL); return ok }).WithTimeout(stepTimeout).Should(BeTrue())
			Expect(unix.Tgkill(os.Getpid(), tid, unix.SIGUSR1)).To(Succeed())
			Eventually(sig).WithTimeout(stepTimeout).Should(Receive())
			Expect(unix.Write(peer, []byte("after"))).To(Equal(5))
		}()
		p := make([]byte, 16)
		n, _, err := b.Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("after"))
	})

	It("return what a read with no room for bytes gets, 0, and not the end of the stream", func() {
		b, peer := blockingPair()
		Expect(unix.Write(peer, []byte("x"))).To(Equal(1))
		// No control buffer either: given one, x/sys reads a byte anyway.
		n, _, err := b.Read(nil, nil, nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(BeZero())
		p := make([]byte, 4)
		n, _, err = b.Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("x"))
	})

	It("deliver descriptors, close-on-exec, after the caller's", func() {
		b, peer := blockingPair()
		sent := memfds(2)
		Expect(unix.Sendmsg(peer, []byte("d"), fdpass.AppendRights(nil, sent), nil, 0)).To(Succeed())
		p := make([]byte, 4)
		n, fds, err := b.Read(p, make([]byte, fdpass.OOBSize), []int{-5}, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("d"))
		Expect(fds[0]).To(Equal(-5))
		expectSameFiles(fds[1:], sent)
		for _, fd := range fds[1:] {
			Expect(cloexec(fd)).To(BeTrue())
		}
		closeAll(fds[1:])
	})

	It("return ErrTruncated on MSG_CTRUNC, and close what arrived (TRN-5)", func() {
		b, peer := blockingPair()
		sent := memfds(5)
		Expect(unix.Sendmsg(peer, []byte("t"), fdpass.AppendRights(nil, sent), nil, 0)).To(Succeed())
		before := openFds()
		_, fds, err := b.Read(make([]byte, 4), make([]byte, unix.CmsgSpace(2*4)), []int{-7}, time.Now().Add(stepTimeout))
		Expect(err).To(MatchError(fdpass.ErrTruncated))
		Expect(fds).To(Equal([]int{-7}), "Read returned descriptors with ErrTruncated")
		Expect(openFds()).To(Equal(before), "descriptors received in the truncated read leaked")
	})

	It("give up at the deadline when nothing comes, naming the call", func() {
		b, _ := blockingPair()
		_, fds, err := b.Read(make([]byte, 4), make([]byte, fdpass.OOBSize), []int{-3}, time.Now().Add(20*time.Millisecond))
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
		Expect(err).To(MatchError(ContainSubstring("recvmsg")))
		Expect(fds).To(Equal([]int{-3}))
	})

	It("report a failure of the socket as it is, not as a deadline", func() {
		b, peer := blockingPair()
		Expect(unix.Close(peer)).To(Succeed())
		err := b.Write([]byte("x"), nil, time.Now().Add(stepTimeout))
		Expect(err).To(MatchError(syscall.EPIPE))
		Expect(errors.Is(err, os.ErrDeadlineExceeded)).To(BeFalse(), "EPIPE reported as a deadline: %v", err)
		var se *os.SyscallError
		Expect(errors.As(err, &se)).To(BeTrue())
		Expect(se.Syscall).To(Equal("sendmsg"))
	})

	It("write data larger than the socket buffers whole, waiting for room", func() {
		b, peer := blockingPair()
		data := make([]byte, 4<<20)
		for i := range data {
			data[i] = byte(i * 13)
		}
		got := make(chan []byte, 1)
		go func() {
			defer GinkgoRecover()
			all := make([]byte, 0, len(data))
			buf := make([]byte, 64<<10)
			for len(all) < len(data) {
				n, err := unix.Read(peer, buf)
				Expect(err).NotTo(HaveOccurred())
				Expect(n).To(BeNumerically(">", 0))
				all = append(all, buf[:n]...)
			}
			got <- all
		}()
		Expect(b.Write(data, nil, time.Now().Add(stepTimeout))).To(Succeed())
		Eventually(got).WithTimeout(stepTimeout).Should(Receive(Equal(data)))
	})
})

var _ = Describe("DialBlocking", func() {
	// fullListener listens with no room in its backlog and one connection
	// already waiting in it, so that the next connect cannot complete
	// until that one is accepted.
	fullListener := func() (ln int, addr string) {
		GinkgoHelper()
		addr = filepath.Join(GinkgoT().TempDir(), "s")
		ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(unix.Close, ln)
		Expect(unix.Bind(ln, &unix.SockaddrUnix{Name: addr})).To(Succeed())
		Expect(unix.Listen(ln, 0)).To(Succeed())
		first, err := fdpass.DialBlocking(addr, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(first.Close)
		return ln, addr
	}
	It("connects a non-blocking, close-on-exec socket", func() {
		addr := filepath.Join(GinkgoT().TempDir(), "s")
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		b, err := fdpass.DialBlocking(addr, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		defer b.Close()
		Expect(nonBlocking(b.Fd())).To(BeTrue())
		Expect(cloexec(b.Fd())).To(BeTrue())
	})

	It("reports a refused connection as it is, not as a deadline", func() {
		addr := filepath.Join(GinkgoT().TempDir(), "s")
		ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(unix.Bind(ln, &unix.SockaddrUnix{Name: addr})).To(Succeed())
		Expect(unix.Close(ln)).To(Succeed()) // a socket file nobody listens on
		_, err = fdpass.DialBlocking(addr, time.Now().Add(stepTimeout))
		Expect(err).To(MatchError(syscall.ECONNREFUSED))
		Expect(errors.Is(err, os.ErrDeadlineExceeded)).To(BeFalse())
		Expect(err).To(MatchError(ContainSubstring("connect")))
	})

	It("waits for room in a full backlog, and gives up at its deadline", func() {
		_, addr := fullListener()
		start := time.Now()
		_, err := fdpass.DialBlocking(addr, start.Add(100*time.Millisecond))
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
		Expect(err).To(MatchError(ContainSubstring("connect")))
		Expect(time.Since(start)).To(BeNumerically(">=", 100*time.Millisecond))
	})

	It("connects once the listener makes room during the wait, and stays non-blocking", func() {
		ln, addr := fullListener()
		onceThreadIn(unix.SYS_CONNECT, func() { // the dial waits for room
			fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
			Expect(err).NotTo(HaveOccurred())
			unix.Close(fd)
		})
		b, err := fdpass.DialBlocking(addr, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		defer b.Close()
		Expect(nonBlocking(b.Fd())).To(BeTrue())
		cred, err := b.PeerCred() // connected: the kernel knows the peer
		Expect(err).NotTo(HaveOccurred())
		Expect(cred.PID).To(Equal(os.Getpid()))
	})
})
