package fdpass_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// statusFlags returns the open file description's status flags (F_GETFL).
func statusFlags(fd int) int {
	GinkgoHelper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	Expect(err).NotTo(HaveOccurred())
	return flags
}

// acceptOnce is a named function so that goroutineWaiting can find it.
func acceptOnce(ln net.Listener, done chan<- error) {
	c, err := ln.Accept()
	if err == nil {
		c.Close()
	}
	done <- err
}

var _ = Describe("RawFd", func() {
	It("returns the listener's own descriptor and leaves it non-blocking (TRN-9); Close still ends a pending Accept", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		tl := ln.(*net.TCPListener)
		var own, flagsBefore int
		control(tl, func(fd int) { own, flagsBefore = fd, statusFlags(fd) })
		Expect(flagsBefore & unix.O_NONBLOCK).NotTo(BeZero())

		fd, err := fdpass.RawFd(tl)
		Expect(err).NotTo(HaveOccurred())
		Expect(fd).To(Equal(own), "RawFd returned another descriptor (a dup?)")
		Expect(statusFlags(fd)).To(Equal(flagsBefore), "RawFd changed the description's status flags")

		// A listener flipped to blocking mode would sit in accept4 and its
		// Close would hang: the goroutine must be parked in the poller.
		accepted := make(chan error, 1)
		go acceptOnce(tl, accepted)
		Eventually(func() bool { return goroutineWaiting("fdpass_test.acceptOnce") }).
			WithTimeout(stepTimeout).Should(BeTrue(), "Accept is not waiting in the poller")
		closed := make(chan error, 1)
		go func() { closed <- tl.Close() }()
		DeferCleanup(func() {
			// Should the listener have gone blocking, release Accept and
			// Close so that the spec fails instead of hanging.
			if len(closed) == 0 {
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					c.Close()
				}
			}
		})
		Eventually(closed).WithTimeout(stepTimeout).Should(Receive(BeNil()))
		Eventually(accepted).WithTimeout(stepTimeout).Should(Receive(MatchError(net.ErrClosed)))
	})

	It("does not change the blocking mode of a connection", func() {
		a, _ := socketPair()
		var before int
		control(a, func(fd int) { before = statusFlags(fd) })
		fd, err := fdpass.RawFd(a)
		Expect(err).NotTo(HaveOccurred())
		Expect(statusFlags(fd)).To(Equal(before))
	})

	It("fails on a closed connection", func() {
		a, _ := socketPair()
		Expect(a.Close()).To(Succeed())
		fd, err := fdpass.RawFd(a)
		Expect(err).To(HaveOccurred())
		Expect(fd).To(Equal(-1))
	})
})

var _ = Describe("Kind", func() {
	// Each entry makes a descriptor, kept alive by the spec's cleanup.
	DescribeTable("says what a descriptor is", func(open func() (syscall.Conn, error), want wire.Kind) {
		c, err := open()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { c.(interface{ Close() error }).Close() })
		var got wire.Kind
		var kerr error
		control(c, func(fd int) { got, kerr = fdpass.Kind(fd) })
		Expect(kerr).NotTo(HaveOccurred())
		Expect(got).To(Equal(want))
	},
		Entry("a temp file: file", func() (syscall.Conn, error) {
			return os.CreateTemp(GinkgoT().TempDir(), "kind")
		}, wire.KindFile),
		Entry("a pipe: file", func() (syscall.Conn, error) {
			r, w, err := os.Pipe()
			if err == nil {
				DeferCleanup(w.Close)
			}
			return r, err
		}, wire.KindFile),
		Entry("/dev/null: file", func() (syscall.Conn, error) {
			return os.Open(os.DevNull)
		}, wire.KindFile),
		Entry("a TCP listener: listener", func() (syscall.Conn, error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			return ln.(*net.TCPListener), nil
		}, wire.KindListener),
		Entry("a TCP connection: stream", func() (syscall.Conn, error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			DeferCleanup(ln.Close)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return nil, err
			}
			return c.(*net.TCPConn), nil
		}, wire.KindStream),
		Entry("a UDP socket: packet", func() (syscall.Conn, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			return pc.(*net.UDPConn), nil
		}, wire.KindPacket),
		Entry("a unix listener: listener", func() (syscall.Conn, error) {
			dir, err := os.MkdirTemp("", "gf")
			if err != nil {
				return nil, err
			}
			DeferCleanup(os.RemoveAll, dir)
			ln, err := net.Listen("unix", filepath.Join(dir, "s"))
			if err != nil {
				return nil, err
			}
			return ln.(*net.UnixListener), nil
		}, wire.KindListener),
		Entry("a unix connection: stream", func() (syscall.Conn, error) {
			a, _ := socketPair()
			return a, nil
		}, wire.KindStream),
		Entry("a unixgram socket: packet", func() (syscall.Conn, error) {
			dir, err := os.MkdirTemp("", "gf")
			if err != nil {
				return nil, err
			}
			DeferCleanup(os.RemoveAll, dir)
			pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "g"), Net: "unixgram"})
			if err != nil {
				return nil, err
			}
			return pc, nil
		}, wire.KindPacket),
	)

	It("says stream for a stream socket that neither listens nor is connected", func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(unix.Close, fd)
		Expect(fdpass.Kind(fd)).To(Equal(wire.KindStream))
	})

	It("fails, naming the call, on a closed descriptor", func() {
		fd := memfds(1)[0]
		Expect(unix.Close(fd)).To(Succeed())
		_, err := fdpass.Kind(fd)
		Expect(err).To(MatchError(unix.EBADF))
		Expect(err.Error()).To(ContainSubstring("fstat"))
	})
})

var _ = Describe("Dup", func() {
	It("makes a new close-on-exec descriptor that shares the open file description", func() {
		orig := memfds(1)[0]
		Expect(cloexec(orig)).To(BeFalse(), "test setup")
		before := openFds()

		dup, err := fdpass.Dup(orig)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(unix.Close, dup)
		Expect(dup).NotTo(Equal(orig))
		Expect(openFds()).To(Equal(before + 1))
		Expect(cloexec(dup)).To(BeTrue(), "the dup is not close-on-exec")
		Expect(cloexec(orig)).To(BeFalse(), "Dup changed the original's descriptor flags")
		Expect(identityOf(dup)).To(Equal(identityOf(orig)))

		// One description: the offset and the status flags are shared.
		_, err = unix.Seek(orig, 5, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(unix.Seek(dup, 0, 1)).To(Equal(int64(5)))
		_, err = unix.FcntlInt(uintptr(dup), unix.F_SETFL, statusFlags(dup)|unix.O_NONBLOCK)
		Expect(err).NotTo(HaveOccurred())
		Expect(statusFlags(orig) & unix.O_NONBLOCK).NotTo(BeZero())
	})

	It("fails, naming the call, on a closed descriptor", func() {
		fd := memfds(1)[0]
		Expect(unix.Close(fd)).To(Succeed())
		nfd, err := fdpass.Dup(fd)
		Expect(err).To(MatchError(unix.EBADF))
		Expect(err.Error()).To(ContainSubstring("fcntl"))
		Expect(nfd).To(Equal(-1))
	})
})

var _ = Describe("PeerCred", func() {
	me := fdpass.Cred{PID: os.Getpid(), UID: os.Geteuid(), GID: os.Getegid()}

	It("is this process at both ends of a socket pair", func() {
		a, b := socketPair()
		Expect(fdpass.PeerCred(a)).To(Equal(me))
		Expect(fdpass.PeerCred(b)).To(Equal(me))
	})

	It("is the dialling process over an accepted connection, and the listening one over the dialled", func() {
		client, server := acceptedPair(listenUnix())
		Expect(fdpass.PeerCred(server)).To(Equal(me))
		Expect(fdpass.PeerCred(client)).To(Equal(me))
	})

	It("fails on a closed connection, with no identity", func() {
		a, _ := socketPair()
		Expect(a.Close()).To(Succeed())
		cred, err := fdpass.PeerCred(a)
		Expect(err).To(HaveOccurred())
		Expect(cred).To(Equal(fdpass.Cred{PID: -1, UID: -1, GID: -1}))
	})
})

// kernelPassRights asks the kernel itself whether it has SO_PASSRIGHTS
// (Linux 6.16 and later), and skips the spec when it has not.
func kernelPassRights(c syscall.Conn) {
	GinkgoHelper()
	var err error
	control(c, func(fd int) { _, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS) })
	if err != nil {
		Skip(fmt.Sprintf("this kernel has no SO_PASSRIGHTS (Linux 6.16 and later): %v", err))
	}
}

var _ = Describe("SO_PASSRIGHTS", func() {
	It("is on for a new socket, and off once SetPassRights turned it off: a peer's descriptors are refused", func() {
		a, b := socketPair()
		kernelPassRights(a)
		on, known, err := fdpass.PassRights(a)
		Expect(err).NotTo(HaveOccurred())
		Expect(known).To(BeTrue(), "the kernel has SO_PASSRIGHTS")
		Expect(on).To(BeTrue())
		Expect(fdpass.SetPassRights(a, false)).To(Succeed())
		on, _, err = fdpass.PassRights(a)
		Expect(err).NotTo(HaveOccurred())
		Expect(on).To(BeFalse())

		fds := memfds(1)
		err = fdpass.Write(b, []byte("x"), fdpass.AppendRights(nil, fds))
		Expect(err).To(MatchError(unix.EPERM), "the kernel refuses descriptors for a socket that does not pass rights")

		Expect(fdpass.SetPassRights(a, true)).To(Succeed())
		Expect(fdpass.Write(b, []byte("y"), fdpass.AppendRights(nil, fds))).To(Succeed())
		n, got, err := fdpass.Read(a, make([]byte, 4), make([]byte, fdpass.OOBSize), nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(1))
		expectSameFiles(got, fds)
		closeAll(got)
	})

	It("is inherited by the connections a listener accepts", func() {
		ln := listenUnix()
		kernelPassRights(ln)
		Expect(fdpass.SetPassRights(ln, false)).To(Succeed())
		_, server := acceptedPair(ln)
		on, known, err := fdpass.PassRights(server)
		Expect(err).NotTo(HaveOccurred())
		Expect(known).To(BeTrue())
		Expect(on).To(BeFalse())
	})
})

var _ = Describe("CloseAll", func() {
	It("closes every descriptor", func() {
		fds := memfds(4)
		dups := make([]int, len(fds))
		for i, fd := range fds {
			d, err := unix.Dup(fd)
			Expect(err).NotTo(HaveOccurred())
			dups[i] = d
		}
		before := openFds()
		fdpass.CloseAll(dups)
		Expect(openFds()).To(Equal(before - 4))
	})
})

// listenUnix listens on a fresh unix socket path, until the spec ends.
func listenUnix() *net.UnixListener {
	GinkgoHelper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(GinkgoT().TempDir(), "s"), Net: "unix"})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(ln.Close)
	return ln
}

// acceptedPair dials ln and accepts: the two ends, closed when the spec
// ends.
func acceptedPair(ln *net.UnixListener) (client, server *net.UnixConn) {
	GinkgoHelper()
	Expect(ln.SetDeadline(time.Now().Add(stepTimeout))).To(Succeed())
	client, err := net.DialUnix("unix", nil, ln.Addr().(*net.UnixAddr))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(client.Close)
	server, err = ln.AcceptUnix()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(server.Close)
	return client, server
}
