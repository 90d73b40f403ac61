//go:build linux

package control_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/control"
)

func TestControl(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "restart-sim control")
}

var _ = Describe("the report socket", func() {
	It("collects each process's reports, and waits for one that has not come yet", func() {
		path := filepath.Join(GinkgoT().TempDir(), "report.sock")
		sink, err := control.Listen(path)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(sink.Close)
		info, err := os.Stat(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(info.Mode().Perm()).To(Equal(os.FileMode(0o600)))

		r, err := control.Dial(path)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(r.Close)
		Expect(r.Send(control.Received, control.Message{Fds: 12})).To(Succeed())
		Expect(r.Send(control.Exit, control.Message{Fds: 9, Served: map[string]int64{"http": 3}, LinesNext: []uint64{4, 5}})).To(Succeed())

		m, ok := sink.Await(os.Getpid(), control.Exit, 10*time.Second)
		Expect(ok).To(BeTrue())
		Expect(m).To(Equal(control.Message{Type: control.Exit, PID: os.Getpid(), Fds: 9,
			Served: map[string]int64{"http": 3}, LinesNext: []uint64{4, 5}}))
		m, ok = sink.Last(os.Getpid(), control.Received)
		Expect(ok).To(BeTrue())
		Expect(m.Fds).To(Equal(12))

		_, ok = sink.Await(os.Getpid(), control.Ready, 20*time.Millisecond)
		Expect(ok).To(BeFalse(), "no such report")
		_, ok = sink.Last(os.Getpid()+1, control.Exit)
		Expect(ok).To(BeFalse(), "another process's")
	})

	It("refuses a report too large for one datagram", func() {
		path := filepath.Join(GinkgoT().TempDir(), "report.sock")
		sink, err := control.Listen(path)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(sink.Close)
		r, err := control.Dial(path)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(r.Close)
		Expect(r.Send(control.Exit, control.Message{Err: strings.Repeat("x", 70<<10)})).To(MatchError(ContainSubstring("report of")))
	})
})
