package fdpass_test

import (
	"io"
	"net"
	"os"
	"path/filepath"
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
	})
})
