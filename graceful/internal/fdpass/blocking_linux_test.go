package fdpass_test

import (
	"errors"
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

var _ = Describe("Blocking's patience", func() {
	It("calls Impatient once, when a read has waited Patience, and the read still ends with the data", func() {
		b, peer := blockingPair()
		called := make(chan struct{}, 2)
		b.Patience = 10 * time.Millisecond
		b.Impatient = func() {
			called <- struct{}{}
			// Only now does the data come: the read must have been waiting.
			unix.Write(peer, []byte("late"))
		}
		p := make([]byte, 16)
		n, _, err := b.Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("late"))
		Expect(called).To(HaveLen(1))
		Expect(b.Impatient).To(BeNil(), "Impatient is called once")

		unix.Write(peer, []byte("next"))
		n, _, err = b.Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("next"))
		Expect(called).To(HaveLen(1))
	})

	It("does not call Impatient when the data is there", func() {
		b, peer := blockingPair()
		b.Patience = time.Hour // what the kernel waits, if the read waited at all
		b.Impatient = func() { Fail("Impatient called") }
		_, err := unix.Write(peer, []byte("now"))
		Expect(err).NotTo(HaveOccurred())
		p := make([]byte, 16)
		n, _, err := b.Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(2*time.Hour))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("now"))
	})

	It("still gives up at the deadline, after calling Impatient", func() {
		b, _ := blockingPair()
		called := 0
		b.Patience = 10 * time.Millisecond
		b.Impatient = func() { called++ }
		deadline := time.Now().Add(200 * time.Millisecond)
		_, _, err := b.Read(make([]byte, 16), make([]byte, fdpass.OOBSize), nil, deadline)
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
		Expect(called).To(Equal(1))
	})

	It("waits for writes too: a peer that does not read makes it impatient", func() {
		b, peer := blockingPair()
		Expect(unix.SetsockoptInt(b.Fd(), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)).To(Succeed())
		drained := make(chan struct{})
		b.Patience = 10 * time.Millisecond
		b.Impatient = func() {
			go func() {
				defer close(drained)
				buf := make([]byte, 64<<10)
				for got := 0; got < 1<<20; {
					n, err := unix.Read(peer, buf)
					if err != nil {
						return
					}
					got += n
				}
			}()
		}
		Expect(b.Write(make([]byte, 1<<20), nil, time.Now().Add(stepTimeout))).To(Succeed())
		Eventually(drained).WithTimeout(stepTimeout).Should(BeClosed())
		Expect(b.Impatient).To(BeNil())
	})
})

var _ = Describe("Accept", func() {
	listen := func() (*net.UnixListener, string) {
		GinkgoHelper()
		addr := filepath.Join(GinkgoT().TempDir(), "s")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(ln.Close)
		return ln, addr
	}
	accept := func(ln *net.UnixListener, wait time.Duration) (fd int, err error) {
		GinkgoHelper()
		rc, rerr := ln.SyscallConn()
		Expect(rerr).NotTo(HaveOccurred())
		Expect(rc.Control(func(s uintptr) { fd, _, err = fdpass.Accept(int(s), wait) })).To(Succeed())
		return fd, err
	}

	It("returns a non-blocking, close-on-exec connection and leaves the listener non-blocking", func() {
		ln, addr := listen()
		c, err := net.Dial("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()

		fd, err := accept(ln, stepTimeout)
		Expect(err).NotTo(HaveOccurred())
		defer unix.Close(fd)
		Expect(cloexec(fd)).To(BeTrue())
		Expect(nonBlocking(fd)).To(BeTrue(), "the accepted socket is non-blocking, for a Blocking")
		control(ln, func(lfd int) {
			Expect(nonBlocking(lfd)).To(BeTrue(), "the listener stays non-blocking")
		})
		Expect(c.(*net.UnixConn).SetWriteDeadline(time.Now().Add(stepTimeout))).To(Succeed())
		_, err = c.Write([]byte("x"))
		Expect(err).NotTo(HaveOccurred())
		p := make([]byte, 1)
		n, _, err := fdpass.NewBlocking(fd).Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(1), "the accepted socket is the dialled connection")
	})

	It("waits on the thread for a connection that comes during the wait", func() {
		ln, addr := listen()
		dialled := make(chan net.Conn, 1)
		onceThreadIn(unix.SYS_PPOLL, func() { // Accept is waiting in poll
			c, err := net.Dial("unix", addr)
			Expect(err).NotTo(HaveOccurred())
			dialled <- c
		})
		fd, err := accept(ln, stepTimeout)
		Expect(err).NotTo(HaveOccurred())
		unix.Close(fd)
		(<-dialled).Close()
	})

	It("returns ErrWouldBlock when nobody dials within the wait, and at once for no wait", func() {
		ln, _ := listen()
		_, err := accept(ln, 20*time.Millisecond)
		Expect(err).To(MatchError(fdpass.ErrWouldBlock))
		_, err = accept(ln, 0)
		Expect(err).To(MatchError(fdpass.ErrWouldBlock))
	})

	It("fails, naming the call, on a socket that does not listen", func() {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		Expect(err).NotTo(HaveOccurred())
		defer closeAll(fds[:])
		unix.Write(fds[1], []byte("x")) // readable, so poll returns
		_, _, err = fdpass.Accept(fds[0], stepTimeout)
		Expect(err).To(MatchError(ContainSubstring("accept4")))
		Expect(errors.Is(err, fdpass.ErrWouldBlock)).To(BeFalse())
	})
})

var _ = Describe("Detach", func() {
	It("gives the socket of a connection as a close-on-exec descriptor, and closes the connection", func() {
		a, b := socketPair()
		defer b.Close()
		orig, err := fdpass.RawFd(a)
		Expect(err).NotTo(HaveOccurred())
		want := identityOf(orig)
		fd, _, err := fdpass.Detach(a)
		Expect(err).NotTo(HaveOccurred())
		defer unix.Close(fd)
		Expect(identityOf(fd)).To(Equal(want))
		Expect(cloexec(fd)).To(BeTrue())
		_, err = a.Write([]byte("x"))
		Expect(err).To(MatchError(net.ErrClosed), "the connection is closed")
		_, err = b.Write([]byte("y"))
		Expect(err).NotTo(HaveOccurred())
		p := make([]byte, 1)
		n, _, err := fdpass.NewBlocking(fd).Read(p, make([]byte, fdpass.OOBSize), nil, time.Now().Add(stepTimeout))
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(1), "the descriptor is the connection's socket")
	})
})

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
