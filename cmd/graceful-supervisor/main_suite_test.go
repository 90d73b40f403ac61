//go:build linux

package main_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/gracefulfd/graceful/supervisor"
)

func TestGracefulSupervisor(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "graceful-supervisor")
}

// The binaries under test: the command, and the supervisor package's test
// service.
var gs, service string

var _ = BeforeSuite(func() {
	// Bounds for what must happen eventually, generous for a loaded machine;
	// never a measure of speed.
	SetDefaultEventuallyTimeout(30 * time.Second)
	var err error
	gs, err = gexec.Build("github.com/gracefulfd/graceful/cmd/graceful-supervisor")
	Expect(err).NotTo(HaveOccurred())
	service, err = gexec.Build("github.com/gracefulfd/graceful/supervisor/internal/testservice")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)
})

// shortDir is a fresh directory with a short path (unix socket paths are
// limited to 107 bytes).
func shortDir() string {
	GinkgoHelper()
	dir, err := os.MkdirTemp("", "gs")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	return dir
}

// run starts `graceful-supervisor args...`; it is killed with its
// generations at the end of the spec if still running.
func run(args ...string) *gexec.Session {
	GinkgoHelper()
	return runCmd(exec.Command(gs, args...))
}

func runCmd(cmd *exec.Cmd) *gexec.Session {
	GinkgoHelper()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	s, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		if s.ExitCode() == -1 {
			s.Signal(syscall.SIGTERM)
			if s.Wait(30*time.Second).ExitCode() == -1 {
				s.Kill().Wait(10 * time.Second)
			}
		}
	})
	return s
}

// status asks the supervisor in dir for its status, until it answers.
func status(dir string) supervisor.Status {
	GinkgoHelper()
	var st supervisor.Status
	Eventually(func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err = supervisor.RequestStatus(ctx, dir)
		return err
	}).WithTimeout(30 * time.Second).Should(Succeed())
	return st
}

// serving waits until generation n serves, and returns it.
func serving(dir string, n int) supervisor.Generation {
	GinkgoHelper()
	var g supervisor.Generation
	Eventually(func() int {
		st := status(dir)
		if st.Serving == nil {
			return 0
		}
		g = *st.Serving
		return g.N
	}).WithTimeout(30*time.Second).Should(Equal(n), "generation %d does not serve", n)
	return g
}

// openToAll lets another user run the binaries built for the suite.
func openToAll() {
	GinkgoHelper()
	for _, bin := range []string{gs, service} {
		for dir := filepath.Dir(bin); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
			Expect(os.Chmod(dir, 0o755)).To(Succeed())
			DeferCleanup(os.Chmod, dir, os.FileMode(0o700))
		}
	}
}
