package fdpass_test

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// stepTimeout bounds every blocking step of these tests.
const stepTimeout = 5 * time.Second

var _ = BeforeSuite(func() {
	// Start the runtime's poller, so that its descriptors are there before
	// the first count.
	a, b := socketPair()
	a.Close()
	b.Close()
})

// Every spec must leave the descriptors and goroutines it found.
var _ = BeforeEach(func() {
	fdsBefore := openFds()
	running := goleak.IgnoreCurrent()
	DeferCleanup(func() {
		Eventually(openFds).WithTimeout(stepTimeout).Should(Equal(fdsBefore), "descriptors leaked")
		Expect(goleak.Find(running)).To(Succeed())
	})
})

// openFds counts this process's open descriptors.
func openFds() int {
	GinkgoHelper()
	entries, err := os.ReadDir("/proc/self/fd")
	Expect(err).NotTo(HaveOccurred())
	return len(entries)
}

// socketPair returns the two ends of a connected AF_UNIX SOCK_STREAM pair,
// as the library sees connections, with a deadline on every read and write.
func socketPair() (*net.UnixConn, *net.UnixConn) {
	GinkgoHelper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	Expect(err).NotTo(HaveOccurred())
	return unixConn(fds[0]), unixConn(fds[1])
}

func unixConn(fd int) *net.UnixConn {
	GinkgoHelper()
	f := os.NewFile(uintptr(fd), "socketpair")
	c, err := net.FileConn(f)
	Expect(f.Close()).To(Succeed())
	Expect(err).NotTo(HaveOccurred())
	Expect(c.SetDeadline(time.Now().Add(stepTimeout))).To(Succeed())
	DeferCleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

// memfds makes n descriptors that each refer to a file of their own (so
// that fstat tells them apart) and that are not close-on-exec (so that a
// received copy that is close-on-exec proves the receiver asked for it).
func memfds(n int) []int {
	GinkgoHelper()
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.MemfdCreate(fmt.Sprintf("fdpass-test-%d", i), 0)
		Expect(err).NotTo(HaveOccurred())
		fds[i] = fd
	}
	DeferCleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return fds
}

// identity is what the kernel says a descriptor refers to.
type identity struct{ Dev, Ino uint64 }

func identityOf(fd int) identity {
	GinkgoHelper()
	var st unix.Stat_t
	Expect(unix.Fstat(fd, &st)).To(Succeed())
	return identity{Dev: st.Dev, Ino: st.Ino}
}

// expectSameFiles checks that got are new descriptors for the files of
// want, in the same order.
func expectSameFiles(got, want []int) {
	GinkgoHelper()
	Expect(got).To(HaveLen(len(want)))
	for i := range want {
		Expect(got[i]).NotTo(Equal(want[i]), "descriptor %d was not received as a new number", i)
		Expect(identityOf(got[i])).To(Equal(identityOf(want[i])), "descriptor %d refers to another file: order lost", i)
	}
}

func cloexec(fd int) bool {
	GinkgoHelper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	Expect(err).NotTo(HaveOccurred())
	return flags&unix.FD_CLOEXEC != 0
}

// closeAll closes descriptors a spec received.
func closeAll(fds []int) {
	GinkgoHelper()
	for _, fd := range fds {
		Expect(unix.Close(fd)).To(Succeed())
	}
}

// control runs f on the descriptor behind c, without Fd's side effects.
func control(c syscall.Conn, f func(fd int)) {
	GinkgoHelper()
	rc, err := c.SyscallConn()
	Expect(err).NotTo(HaveOccurred())
	Expect(rc.Control(func(fd uintptr) { f(int(fd)) })).To(Succeed())
}

// setsockopt sets an integer socket option on c's descriptor.
func setsockopt(c *net.UnixConn, opt, value int) error {
	GinkgoHelper()
	var err error
	control(c, func(fd int) { err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, value) })
	return err
}

// goroutineWaiting reports whether a goroutine whose stack holds fn is
// parked in the runtime's poller ("IO wait"), as opposed to blocked in a
// system call.
func goroutineWaiting(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) && strings.Contains(g, "[IO wait") {
			return true
		}
	}
	return false
}

// threadInSyscall reports whether a thread of this process is blocked in
// the system call nr, as /proc/self/task/*/syscall shows it.
func threadInSyscall(nr uintptr) bool {
	_, ok := threadIn(nr)
	return ok
}

// threadIn returns the id of a thread of this process blocked in the
// system call nr.
func threadIn(nr uintptr) (tid int, ok bool) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, false
	}
	want := fmt.Sprintf("%d ", nr)
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/syscall")
		if err == nil && strings.HasPrefix(string(b), want) {
			tid, err := strconv.Atoi(t.Name())
			return tid, err == nil
		}
	}
	return 0, false
}

// nonBlocking reports whether fd's open file description has O_NONBLOCK.
func nonBlocking(fd int) bool {
	GinkgoHelper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	Expect(err).NotTo(HaveOccurred())
	return fl&unix.O_NONBLOCK != 0
}

// onceThreadIn runs f on another goroutine once a thread of this process
// is blocked in the system call nr: f wakes or answers a call that is
// known to be waiting.
func onceThreadIn(nr uintptr, f func()) {
	go func() {
		defer GinkgoRecover()
		Eventually(func() bool { return threadInSyscall(nr) }).WithTimeout(stepTimeout).Should(BeTrue())
		f()
	}()
}
