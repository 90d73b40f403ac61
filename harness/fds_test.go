//go:build linux

package harness_test

import (
	"os"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

var _ = Describe("harness descriptor inspection", Label("harness"), harnesstest.Repeat(), func() {
	var (
		self int
		file *os.File
		fd   int
	)
	BeforeEach(func() {
		harnesstest.TrackLeaks(leakWait)
		self = os.Getpid()
		var err error
		file, err = os.CreateTemp("", "gf")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.Remove, file.Name())
		DeferCleanup(func() { file.Close() })
		fd, err = harness.RawFD(file)
		Expect(err).NotTo(HaveOccurred())
	})

	It("reads a descriptor's identity, flags and position", func() {
		_, err := file.WriteString("0123456789")
		Expect(err).NotTo(HaveOccurred())
		_, err = file.Seek(4, 0)
		Expect(err).NotTo(HaveOccurred())

		d := harnesstest.DescribeFD(self, fd)
		Expect(d.Num).To(Equal(fd))
		Expect(d.Target).To(Equal(file.Name()))
		id, err := harness.FileIDOf(fd)
		Expect(err).NotTo(HaveOccurred())
		st, err := os.Stat(file.Name())
		Expect(err).NotTo(HaveOccurred())
		Expect(d.ID).To(Equal(id))
		Expect(d.ID.Ino).To(Equal(st.Sys().(*syscall.Stat_t).Ino))
		Expect(d.Pos).To(Equal(int64(4)))
		Expect(d.Flags & unix.O_ACCMODE).To(Equal(unix.O_RDWR))
		Expect(d.CloseOnExec()).To(BeTrue())

		unix.CloseOnExec(fd)
		Expect(unix.SetNonblock(fd, true)).To(Succeed())
		d = harnesstest.DescribeFD(self, fd)
		Expect(d.NonBlocking()).To(BeTrue())
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
		Expect(err).NotTo(HaveOccurred())
		Expect(unix.SetNonblock(fd, false)).To(Succeed())
		d = harnesstest.DescribeFD(self, fd)
		Expect(d.CloseOnExec()).To(BeFalse())
		Expect(d.NonBlocking()).To(BeFalse())
		Expect(d.String()).To(ContainSubstring(file.Name()))
	})

	It("lists and counts descriptors, leaving out the one it reads the list with", func() {
		fds, err := harness.ListFDs(self)
		Expect(err).NotTo(HaveOccurred())
		n, err := harness.CountFDs(self)
		Expect(err).NotTo(HaveOccurred())
		Expect(fds).To(HaveLen(n))
		Expect(fds).To(ContainElement(HaveField("Num", fd)))
		for _, d := range fds {
			Expect(d.Target).NotTo(HaveSuffix("/fd"), "the listing's own descriptor")
		}
		file.Close()
		Expect(harness.CountFDs(self)).To(Equal(n - 1))
	})

	It("tells which descriptors a snapshot did not have, and which it had that are gone", func() {
		before := harnesstest.Snapshot(self)
		var p [2]int
		Expect(unix.Pipe2(p[:], unix.O_CLOEXEC)).To(Succeed())
		file.Close()
		after := harnesstest.Snapshot(self)
		Expect(before.Opened(after)).To(ConsistOf(HaveField("Num", p[0]), HaveField("Num", p[1])))
		Expect(before.Closed(after)).To(ConsistOf(HaveField("Num", fd)))

		err := harness.WaitNoneOpened(before, 20*time.Millisecond)
		Expect(err).To(MatchError(harness.ErrLeak))
		Expect(err).To(MatchError(ContainSubstring("pipe:")))
		unix.Close(p[0])
		unix.Close(p[1])
		Expect(harness.WaitNoneOpened(before, time.Second)).To(Succeed())
	})

	It("reports a descriptor or process that does not exist with ErrNoFD", func() {
		file.Close()
		_, err := harness.DescribeFD(self, fd)
		Expect(err).To(MatchError(harness.ErrNoFD))
		_, err = harness.ListFDs(1 << 30)
		Expect(err).To(HaveOccurred())
	})

	It("notices a goroutine left running", func() {
		acc, err := harness.StartAccounting()
		Expect(err).NotTo(HaveOccurred())
		release := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			<-release
		}()
		err = acc.Check(50 * time.Millisecond)
		Expect(err).To(MatchError(harness.ErrLeak))
		Expect(err).To(MatchError(ContainSubstring("fds_test.go")), "names where the goroutine is")
		close(release)
		<-stopped
		Expect(acc.Check(time.Second)).To(Succeed())
	})
})
