//go:build linux

package graceful

import (
	"os"
	"strconv"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"golang.org/x/sys/unix"
)

var _ = ginkgo.Describe("a process started as a spare (SpareEnv)", func() {
	// spare makes the socket pair of a spare, with the spare's end named
	// in SpareEnv, and returns the supervisor's end.
	ginkgo.BeforeEach(func() {
		// The specs make the pair in this process, which plays the parent.
		saved := spareParent
		ginkgo.DeferCleanup(func() { spareParent = saved })
		spareParent = os.Getpid
	})
	spare := func() (ours, theirs int) {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		ginkgo.DeferCleanup(unix.Close, pair[0])
		ginkgo.DeferCleanup(os.Unsetenv, SpareEnv)
		gomega.Expect(os.Setenv(SpareEnv, strconv.Itoa(pair[1]))).To(gomega.Succeed())
		return pair[0], pair[1]
	}
	waiting := func(ours int) {
		var b [1]byte
		n, err := unix.Read(ours, b[:])
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(string(b[:n])).To(gomega.Equal("W"), "the spare did not say it waits")
	}

	ginkgo.It("is not a spare without the variable: no wait", func() {
		gomega.Expect(waitForTurn()).To(gomega.Succeed())
	})

	ginkgo.It("says it waits, and goes on when its turn comes; the variable and the descriptor are gone", func() {
		ours, _ := spare()
		done := make(chan error, 1)
		go func() { done <- waitForTurn() }()
		waiting(ours)
		gomega.Consistently(done, "50ms").ShouldNot(gomega.Receive(), "went on before its turn")
		_, err := unix.Write(ours, []byte{'G'})
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Eventually(done).Should(gomega.Receive(gomega.BeNil()))
		_, set := os.LookupEnv(SpareEnv)
		gomega.Expect(set).To(gomega.BeFalse())
		// The suite's leak check finds the spare's end closed.
	})

	ginkgo.It("goes on when its turn came, and the supervisor closed its end, before it waited", func() {
		ours, _ := spare()
		_, err := unix.Write(ours, []byte{'G'})
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(unix.Shutdown(ours, unix.SHUT_RDWR)).To(gomega.Succeed()) // writing 'W' fails now
		gomega.Expect(waitForTurn()).To(gomega.Succeed())
	})

	ginkgo.DescribeTable("is dismissed when the supervisor closes its end, or says anything but 'G'",
		func(say []byte) {
			ours, _ := spare()
			done := make(chan error, 1)
			go func() { done <- waitForTurn() }()
			waiting(ours)
			if len(say) > 0 {
				_, err := unix.Write(ours, say)
				gomega.Expect(err).NotTo(gomega.HaveOccurred())
			} else {
				unix.Shutdown(ours, unix.SHUT_WR)
			}
			gomega.Eventually(done).Should(gomega.Receive(gomega.MatchError(ErrSpareDismissed)))
		},
		ginkgo.Entry("closed", nil),
		ginkgo.Entry("another byte", []byte{'X'}),
	)

	ginkgo.It("fails at once, without waiting, when the socket's peer is not this process's parent", func() {
		_, theirs := spare()
		spareParent = func() int { return 1 }
		gomega.Expect(waitForTurn()).To(gomega.MatchError(gomega.MatchRegexp(
			`GRACEFUL_SPARE_FD=\d+: its peer \(pid %d, uid \d+\) is not this process's parent \(pid 1\) as this user`, os.Getpid())))
		// Not the spare's: left open, as any descriptor the process did
		// not know to be its own.
		gomega.Expect(unix.Close(theirs)).To(gomega.Succeed())
	})

	ginkgo.DescribeTable("fails at once, without waiting, when the variable names no socket",
		func(value func() string, msg string) {
			ginkgo.DeferCleanup(os.Unsetenv, SpareEnv)
			gomega.Expect(os.Setenv(SpareEnv, value())).To(gomega.Succeed())
			gomega.Expect(waitForTurn()).To(gomega.MatchError(gomega.ContainSubstring(msg)))
		},
		ginkgo.Entry("not a number", func() string { return "three" }, `GRACEFUL_SPARE_FD="three": not a descriptor`),
		ginkgo.Entry("a negative number", func() string { return "-1" }, `GRACEFUL_SPARE_FD="-1": not a descriptor`),
		ginkgo.Entry("descriptor 0, a descriptor like any other (here not a socket)", func() string {
			saved, err := unix.Dup(0)
			gomega.Expect(err).NotTo(gomega.HaveOccurred())
			ginkgo.DeferCleanup(func() { unix.Dup2(saved, 0); unix.Close(saved) })
			f, err := os.Open(os.DevNull)
			gomega.Expect(err).NotTo(gomega.HaveOccurred())
			defer f.Close()
			gomega.Expect(unix.Dup2(int(f.Fd()), 0)).To(gomega.Succeed())
			return "0"
		}, "GRACEFUL_SPARE_FD=0: not a socket"),
		ginkgo.Entry("a closed descriptor", func() string { return "1000000" }, "GRACEFUL_SPARE_FD=1000000: not a socket"),
		ginkgo.Entry("a file", func() string {
			f, err := os.Open(os.DevNull)
			gomega.Expect(err).NotTo(gomega.HaveOccurred())
			ginkgo.DeferCleanup(f.Close)
			return strconv.Itoa(int(f.Fd()))
		}, "not a socket"),
	)
})
