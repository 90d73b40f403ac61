//go:build linux

package main_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/internal/svctest"
	"github.com/gracefulfd/graceful/supervisor"
)

var _ = Describe("graceful-supervisor", func() {
	It("stays in the foreground: marks each generation's output, and Ctrl-C stops the service with its exit status", func() {
		dir := shortDir()
		s := run("-dir", dir, "--", service, "-exit-code", "7")
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 1\] serving 127\.0\.0\.1:\d+`))
		Eventually(s.Err).Should(gbytes.Say(`\[supervisor\] .*msg="generation ready" gen=1`))
		s.Signal(syscall.SIGINT)
		Eventually(s).WithTimeout(30 * time.Second).Should(gexec.Exit(7))
		Expect(s.Out).To(gbytes.Say(`\[gen 1\] stopped`))
	})

	It("restarts on SIGHUP and on `restart`, which exits 0 on success, 1 with the reason on failure, 3 when refused", func() {
		dir := shortDir()
		mode := filepath.Join(dir, "mode")
		Expect(os.WriteFile(mode, []byte("hang"), 0o600)).To(Succeed())
		// Generation 1 hangs: the refused restart below must be done
		// within its ready timeout, on a busy machine too.
		s := run("-dir", filepath.Join(dir, "run"), "-ready-timeout", "4s", "--", service, "-mode-file", mode)
		restart := func() *gexec.Session {
			GinkgoHelper()
			r := runCmd(exec.Command(gs, "restart", "-dir", filepath.Join(dir, "run")))
			Eventually(r).WithTimeout(60 * time.Second).Should(gexec.Exit())
			return r
		}

		By("asking before any generation is ready: refused")
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 1\] serving`)) // it has read its mode
		Expect(os.WriteFile(mode, nil, 0o600)).To(Succeed())                                    // for generation 2
		r := restart()
		Expect(r.ExitCode()).To(Equal(3))
		Expect(r.Err).To(gbytes.Say(`restart refused: .*the first generation is starting; try again once it is ready`))
		serving(filepath.Join(dir, "run"), 2) // after generation 1's ready timeout

		By("SIGHUP")
		s.Signal(syscall.SIGHUP)
		serving(filepath.Join(dir, "run"), 3)
		Eventually(s.Out).Should(gbytes.Say(`\[gen 2\] stopped`))

		By("restart, successful")
		r = restart()
		Expect(r.ExitCode()).To(Equal(0))
		Expect(r.Out).To(gbytes.Say(`generation 4 \(pid \d+\) took over`))

		By("restart into a generation that exits")
		Expect(os.WriteFile(mode, []byte("exit"), 0o600)).To(Succeed())
		r = restart()
		Expect(r.ExitCode()).To(Equal(1))
		Expect(r.Err).To(gbytes.Say(`restart failed: generation 5 exited before it was ready \(exit status 3\); it was killed and generation 4 serves on`))
		Expect(status(filepath.Join(dir, "run")).Serving.N).To(Equal(4))
	})

	It("with -spare, keeps a spare waiting, which takes over when the serving generation is killed; without -handoff, -spare is refused", func() {
		dir := shortDir()
		refused := run("-dir", filepath.Join(dir, "refused"), "-spare", "--", service)
		Eventually(refused).WithTimeout(30 * time.Second).Should(gexec.Exit(1))
		Expect(refused.Err).To(gbytes.Say(`Config.Spare needs Config.Handoff`))

		handoff := filepath.Join(dir, "h.sock")
		run("-dir", filepath.Join(dir, "run"), "-handoff", handoff, "-spare", "--", service, "-fdstore", "-handoff", handoff)
		g1 := serving(filepath.Join(dir, "run"), 1)
		var spare supervisor.Generation
		Eventually(func() bool {
			st := status(filepath.Join(dir, "run"))
			if st.Spare != nil && st.SpareWaiting && len(st.Stored) == 1 {
				spare = *st.Spare
				return true
			}
			return false
		}).WithTimeout(30*time.Second).Should(BeTrue(), "no spare waits")
		st := runCmd(exec.Command(gs, "status", "-dir", filepath.Join(dir, "run")))
		Eventually(st).WithTimeout(30 * time.Second).Should(gexec.Exit(0))
		Expect(st.Out).To(gbytes.Say(fmt.Sprintf(`spare: generation 2, pid %d, waiting for its turn`, spare.PID)))
		Expect(syscall.Kill(g1.PID, syscall.SIGKILL)).To(Succeed())
		g2 := serving(filepath.Join(dir, "run"), 2)
		Expect(g2.PID).To(Equal(spare.PID))
		Expect(g2.Status).To(Equal(g1.Status), "not the same listener")
	})

	It("as a child subreaper, reaps the orphans a generation leaves", func() {
		dir := shortDir()
		mode := filepath.Join(dir, "mode")
		Expect(os.WriteFile(mode, []byte("orphan"), 0o600)).To(Succeed())
		run("-dir", filepath.Join(dir, "run"), "--", service, "-mode-file", mode)
		serving(filepath.Join(dir, "run"), 1)
		Expect(os.WriteFile(mode, nil, 0o600)).To(Succeed())
		r := runCmd(exec.Command(gs, "restart", "-dir", filepath.Join(dir, "run")))
		Eventually(r).WithTimeout(60 * time.Second).Should(gexec.Exit(0))
		// Generation 1 exits; its child then reads the end of its input
		// and exits, a child of the supervisor by then.
		Eventually(func() int { return status(filepath.Join(dir, "run")).Orphans }).WithTimeout(30 * time.Second).Should(Equal(1))
	})

	It("as PID 1 of a new PID namespace, reaps orphans, forwards SIGTERM and exits with the generation's status", func() {
		if os.Geteuid() != 0 {
			Skip("needs root, for a new PID namespace")
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			Skip("unshare (util-linux) is not installed")
		}
		dir := shortDir()
		mode := filepath.Join(dir, "mode")
		Expect(os.WriteFile(mode, []byte("orphan"), 0o600)).To(Succeed())
		s := runCmd(exec.Command(unshare, "--pid", "--fork", "--mount-proc", gs,
			"-dir", filepath.Join(dir, "run"), "--", service, "-mode-file", mode, "-exit-code", "7"))
		Eventually(s.Out).WithTimeout(30 * time.Second).Should(gbytes.Say(`\[gen 1\] serving \S+ \(ppid 1\)`))
		Eventually(s.Out).Should(gbytes.Say(`\[gen 1\] orphan \d+`))
		serving(filepath.Join(dir, "run"), 1)

		By("restarting: generation 1 exits, its orphan goes to PID 1, which reaps it")
		Expect(os.WriteFile(mode, nil, 0o600)).To(Succeed())
		r := runCmd(exec.Command(gs, "restart", "-dir", filepath.Join(dir, "run")))
		Eventually(r).WithTimeout(60 * time.Second).Should(gexec.Exit(0))
		Eventually(func() int { return status(filepath.Join(dir, "run")).Orphans }).WithTimeout(30 * time.Second).Should(Equal(1))

		By("SIGTERM to PID 1")
		pid1 := childOf(s.Command.Process.Pid)
		Expect(unix.Kill(pid1, syscall.SIGTERM)).To(Succeed())
		Eventually(s).WithTimeout(30 * time.Second).Should(gexec.Exit(7))
		Expect(s.Out).To(gbytes.Say(`\[gen 2\] stopped`))
	})

	It("refuses a control connection from another user", func() {
		if os.Geteuid() != 0 {
			Skip("needs root, to run the client as uid 65534")
		}
		openToAll()
		dir := shortDir()
		s := run("-dir", filepath.Join(dir, "run"), "--", service)
		serving(filepath.Join(dir, "run"), 1)
		// Open what the directory and the socket's mode would keep out, so
		// that the credential check is what refuses.
		Expect(os.Chmod(dir, 0o755)).To(Succeed())
		Expect(os.Chmod(filepath.Join(dir, "run"), 0o755)).To(Succeed())
		Expect(os.Chmod(filepath.Join(dir, "run", "control.sock"), 0o666)).To(Succeed())
		cmd := exec.Command(gs, "restart", "-dir", filepath.Join(dir, "run"))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		r := runCmd(cmd)
		Eventually(r).WithTimeout(30 * time.Second).Should(gexec.Exit(2))
		Expect(r.Err).To(gbytes.Say(`not authorised`))
		Eventually(s.Err).Should(gbytes.Say(`msg="control connection refused" err=".*uid 65534`))
		Expect(status(filepath.Join(dir, "run")).Restarts).To(BeZero())
	})

	It("under systemd-socket-activate, stores the activated socket and hands it to every generation, across a SIGKILL", func() {
		activate, err := exec.LookPath("systemd-socket-activate")
		if err != nil {
			Skip("systemd-socket-activate is not installed")
		}
		dir := shortDir()
		sock := filepath.Join(dir, "svc.sock")
		run := filepath.Join(dir, "run")
		runCmd(exec.Command(activate, "-l", sock, "--fdname=tcp", gs, "-dir", run, "--", service))

		By("connecting, which launches the supervisor")
		first := make(chan string, 1)
		go func() {
			defer GinkgoRecover()
			var line string
			Eventually(func() error {
				c, err := net.DialTimeout("unix", sock, svctest.Timeout)
				if err == nil {
					c.Close()
				}
				return err
			}).WithTimeout(10 * time.Second).Should(Succeed())
			line = svctest.Answer("unix", sock)
			first <- line
		}()
		g1 := serving(run, 1)
		Eventually(first).WithTimeout(30 * time.Second).Should(Receive(Equal(fmt.Sprintf("pid %d", g1.PID))))
		Expect(status(run).Stored).To(Equal([]string{"tcp"}))

		By("killing the serving generation while clients dial")
		stop := make(chan struct{})
		l := svctest.Dial("unix", sock, stop, 100000)
		Expect(unix.Kill(g1.PID, syscall.SIGKILL)).To(Succeed())
		g2 := serving(run, 2)
		Expect(svctest.Answer("unix", sock)).To(Equal(fmt.Sprintf("pid %d", g2.PID)))
		close(stop)
		l.Wait()
		Expect(l.Refused).To(BeZero(), "connections refused")
	})
})

// childOf returns the one child of process pid.
func childOf(pid int) int {
	GinkgoHelper()
	var child int
	Eventually(func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return err
		}
		fields := strings.Fields(string(b))
		if len(fields) != 1 {
			return fmt.Errorf("children of %d: %q", pid, fields)
		}
		child, err = strconv.Atoi(fields[0])
		return err
	}).WithTimeout(10 * time.Second).Should(Succeed())
	return child
}
