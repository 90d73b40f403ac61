//go:build linux

package graceful_test

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

func TestGraceful(t *testing.T) {
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	// Mutation testing (scripts/mutation.sh) stops at the first failure.
	suiteConfig.FailFast = suiteConfig.FailFast || os.Getenv("GRACEFUL_FAIL_FAST") == "1"
	RunSpecs(t, "graceful", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	// Start the runtime's poller, so that its descriptors are there before
	// the first count.
	a, b := socketPair()
	a.Close()
	b.Close()
})

// Every spec must leave the descriptors and goroutines it found.
var _ = BeforeEach(func() {
	before := openFds()
	running := goleak.IgnoreCurrent()
	DeferCleanup(func() {
		Eventually(openFds).WithTimeout(5*time.Second).Should(Equal(before), "descriptors leaked")
		Eventually(func() error { return goleak.Find(running) }).WithTimeout(5 * time.Second).Should(Succeed())
	})
}, OncePerOrdered)

// openFds lists this process's open descriptors.
func openFds() []string {
	GinkgoHelper()
	entries, err := os.ReadDir("/proc/self/fd")
	Expect(err).NotTo(HaveOccurred())
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// socketPair returns the two ends of a connected unix stream socket.
func socketPair() (*net.UnixConn, *net.UnixConn) {
	GinkgoHelper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	Expect(err).NotTo(HaveOccurred())
	return fileConn(fds[0]), fileConn(fds[1])
}

func fileConn(fd int) *net.UnixConn {
	GinkgoHelper()
	f := os.NewFile(uintptr(fd), "socketpair")
	defer f.Close()
	c, err := net.FileConn(f)
	Expect(err).NotTo(HaveOccurred())
	return c.(*net.UnixConn)
}

// socketAddr is a fresh unix socket path, short enough for sun_path.
func socketAddr() string {
	GinkgoHelper()
	dir, err := os.MkdirTemp("", "gf")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	return filepath.Join(dir, "s")
}

// identity is what makes two descriptors the same open object.
type identity struct{ dev, ino uint64 }

func identityOf(fd int) identity {
	GinkgoHelper()
	var st unix.Stat_t
	Expect(unix.Fstat(fd, &st)).To(Succeed())
	return identity{uint64(st.Dev), uint64(st.Ino)}
}

// rawFd is the descriptor behind v, valid while v is open.
func rawFd(v syscall.Conn) int {
	GinkgoHelper()
	rc, err := v.SyscallConn()
	Expect(err).NotTo(HaveOccurred())
	fd := -1
	Expect(rc.Control(func(s uintptr) { fd = int(s) })).To(Succeed())
	return fd
}

// serve runs srv on a fresh socket and returns its address; the server is
// closed when the spec ends. Done errors arrive on the returned channel.
func serve(srv *graceful.Server) (string, <-chan error) {
	GinkgoHelper()
	addr := socketAddr()
	done := make(chan error, 64)
	if srv.Done == nil {
		srv.Done = func(err error) { done <- err }
	}
	ln, err := net.Listen("unix", addr)
	Expect(err).NotTo(HaveOccurred())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	DeferCleanup(func() {
		Expect(srv.Close()).To(Succeed())
		Eventually(served).WithTimeout(5 * time.Second).Should(Receive(MatchError(graceful.ErrServerClosed)))
	})
	return addr, done
}

// fdFlags returns the descriptor flags and the file status flags of fd.
func fdFlags(fd int) (cloexec, nonblock bool) {
	GinkgoHelper()
	fdf, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	Expect(err).NotTo(HaveOccurred())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	Expect(err).NotTo(HaveOccurred())
	return fdf&unix.FD_CLOEXEC != 0, fl&unix.O_NONBLOCK != 0
}
