//go:build linux

package supervisor_test

import (
	"errors"
	"os"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/supervisor"
	"github.com/gracefulfd/graceful/harness"
)

var _ = Describe("the reaper", func() {
	It("reaps a child nobody manages, and leaves managed children to the harness", func() {
		truePath := "/bin/true"
		if _, err := os.Stat(truePath); err != nil {
			truePath = "/usr/bin/true"
		}
		r := supervisor.StartReaper()
		DeferCleanup(r.Stop)

		By("starting a child the reaper manages: the harness must get its exit status")
		var proc *harness.Process
		r.Manage(func() int {
			var err error
			proc, err = harness.Start(harness.Cmd{Path: truePath})
			Expect(err).NotTo(HaveOccurred())
			return proc.Pid()
		})
		exit, err := proc.Wait(10 * time.Second)
		Expect(err).NotTo(HaveOccurred())
		Expect(exit.Success()).To(BeTrue())
		r.Release(proc.Pid())
		Expect(r.Reaped()).To(BeZero())

		By("starting a child nobody manages: the reaper must reap it")
		pid, err := syscall.ForkExec(truePath, []string{truePath}, &syscall.ProcAttr{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(r.Reaped).WithTimeout(10 * time.Second).Should(Equal(1))
		_, err = unix.Wait4(pid, nil, unix.WNOHANG, nil)
		Expect(errors.Is(err, unix.ECHILD)).To(BeTrue(), "pid %d is still a child: %v", pid, err)
	})
})
