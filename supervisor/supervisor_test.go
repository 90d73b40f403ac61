//go:build linux

package supervisor_test

import (
	"context"
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
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/internal/svctest"
	"github.com/gracefulfd/graceful/supervisor"
)

var _ = Describe("a supervisor", func() {
	It("runs the first generation, marks its output, forwards the stop signal and reports its exit status", func() {
		r := start(supervisor.Config{}, "-exit-code", "7")
		g := r.serving(1)
		Eventually(r.out).Should(gbytes.Say(`\[gen 1\] serving 127\.0\.0\.1:\d+ \(ppid \d+\)\n`))

		By("stopping with SIGINT, as Ctrl-C in a terminal does")
		r.Stop(syscall.SIGINT)
		res := r.wait()
		Expect(res.err).NotTo(HaveOccurred())
		Expect(res.exit).To(Equal(supervisor.Exit{Gen: 1, Code: 7}))
		Expect(res.exit.ExitCode()).To(Equal(7))
		Expect(r.out).To(gbytes.Say(`\[gen 1\] stopped\n`))
		Expect(unix.Kill(g.PID, 0)).To(MatchError(unix.ESRCH), "generation 1 still runs")
	})

	It("restarts: the new generation takes over, the old one stops, and no connection is refused meanwhile", func() {
		dir := GinkgoT().TempDir()
		handoff := filepath.Join(dir, "handoff.sock")
		r := start(supervisor.Config{}, "-handoff", handoff)
		g1 := r.serving(1)

		stop := make(chan struct{})
		l := svctest.Dial("tcp", addr(g1), stop, 100000)
		for n := 2; n <= 3; n++ {
			By(fmt.Sprintf("restarting into generation %d", n))
			g, err := restart(r)
			Expect(err).NotTo(HaveOccurred())
			Expect(g.N).To(Equal(n))
			Expect(addr(g)).To(Equal(addr(g1)), "generation %d does not serve the same listener", n)
			Eventually(r.out).Should(gbytes.Say(fmt.Sprintf(`\[gen %d\] stopped\n`, n-1)))
			// Generation n places its hand-off socket once n-1 has let go
			// of the path: the next one would find none there before.
			Eventually(dialUnix).WithArguments(handoff).Should(Succeed(), "generation %d does not serve its hand-off socket", n)
		}
		close(stop)
		l.Wait()
		Expect(l.Refused).To(BeZero(), "connections refused")
		Expect(l.Failed).To(BeZero(), "connections without an answer")
		Expect(l.Answered).To(BeNumerically(">", 0))
		Expect(r.status().Restarts).To(Equal(2))
		// "[gen 2] stopped" is printed just before it exits; the
		// supervisor hears of the exit a moment later.
		r.events.one(supervisor.EventExited, 2)
		Expect(r.status().Retiring).To(BeEmpty())
	})

	It("refuses a runtime directory another supervisor runs with", func() {
		r := start(supervisor.Config{})
		r.serving(1)
		_, err := supervisor.New(supervisor.Config{Path: service, Dir: r.Dir()})
		Expect(err).To(MatchError(graceful.ErrAddrInUse))
		Expect(err.Error()).To(ContainSubstring("another supervisor runs with " + r.Dir()))
		Expect(r.status().Serving.N).To(Equal(1))
		_, err = supervisor.RequestStatus(context.Background(), r.Dir())
		Expect(err).NotTo(HaveOccurred(), "the first supervisor lost its control socket")
	})

	DescribeTable("rolls back: kills a new generation that does not become ready; the serving one goes on, and the events say so in order",
		func(mode string, cfg supervisor.Config, reason string, steps []string, state string, exit supervisor.Exit) {
			r := start(cfg)
			g1 := r.serving(1)
			r.mode(mode)
			_, err := restart(r)
			Expect(err).To(MatchError(supervisor.ErrRestartFailed))
			Expect(err.Error()).To(ContainSubstring(reason))
			Expect(err.Error()).To(ContainSubstring("generation 1 serves on"))
			Expect(r.status().Serving.N).To(Equal(1))
			Expect(svctest.Answer("tcp", addr(g1))).To(Equal(fmt.Sprintf("pid %d", g1.PID)))
			Expect(r.status().Failed).To(Equal(1))

			By("reporting the new generation's end, the restart's error and the generation that serves on")
			Eventually(r.events.steps).Should(Equal(append([]string{"started 1", "ready 1"}, steps...)))
			started := r.events.one(supervisor.EventStarted, 2)
			exited := r.events.one(supervisor.EventExited, 2)
			Expect(exited.Gen).To(And(HaveField("PID", started.Gen.PID), HaveField("State", state)))
			Expect(exited.Exit).To(Equal(exit))
			failed := r.events.one(supervisor.EventRestartFailed, 2)
			Expect(failed.Gen.PID).To(Equal(started.Gen.PID))
			Expect(failed.Err).To(MatchError(supervisor.ErrRestartFailed))
			Expect(failed.Err).To(MatchError(err.Error()), "the event's error is not what Restart returned")
			back := r.events.one(supervisor.EventRolledBack, 1)
			Expect(back.Gen).To(And(HaveField("PID", g1.PID), HaveField("State", "serving")))
			Expect(back.Err).To(BeIdenticalTo(failed.Err))
		},
		Entry("it exits before it is ready", "exit", supervisor.Config{}, "generation 2 exited before it was ready (exit status 3)",
			[]string{"restart-requested 1", "started 2", "exited 2", "restart-failed 2", "rolled-back 1"},
			"starting", supervisor.Exit{Gen: 2, Code: 3}),
		Entry("it is not ready within ReadyTimeout, and is killed", "hang", supervisor.Config{ReadyTimeout: time.Second}, "generation 2 was not ready within 1s",
			[]string{"restart-requested 1", "started 2", "restart-failed 2", "rolled-back 1", "exited 2"},
			"failed", supervisor.Exit{Gen: 2, Code: -1, Signal: syscall.SIGKILL}),
	)

	It("refuses a restart before the first generation is ready, and queues one asked for during a restart", func() {
		// ReadyTimeout is the window in which each step below must be
		// taken; the race detector on a busy machine needs seconds.
		r := startMode("hang", supervisor.Config{ReadyTimeout: 3 * time.Second})
		Eventually(r.out).Should(gbytes.Say(`\[gen 1\] serving`)) // it has read its mode
		r.mode("")                                                // for the next generation
		Expect(r.status().Starting).NotTo(BeNil())
		_, err := restart(r)
		Expect(err).To(MatchError(supervisor.ErrNotServing))
		Expect(err.Error()).To(ContainSubstring("the first generation is starting; try again once it is ready"))

		By("letting the next generation start normally once the first one timed out")
		r.serving(2)

		By("asking for a restart whose generation hangs, and for another one meanwhile")
		r.mode("hang")
		a := make(chan error, 1)
		go func() { _, err := restart(r); a <- err }()
		Eventually(r.out).Should(gbytes.Say(`\[gen 3\] serving`)) // it has read its mode
		r.mode("")                                                // for generation 4
		b := restartInBackground(r)
		Eventually(r.logs.with).WithArguments("restart queued behind the one in progress").ShouldNot(BeEmpty())
		Eventually(a).WithTimeout(20 * time.Second).Should(Receive(&err))
		Expect(err).To(MatchError(supervisor.ErrRestartFailed))
		var g supervisor.Generation
		Eventually(b).WithTimeout(20 * time.Second).Should(Receive(&g))
		Expect(g.N).To(Equal(4))
	})

	Describe("a restart asked for before the serving generation's hand-off socket answers", func() {
		// Generation 2 says READY=1 at once but places its hand-off socket
		// only when the spec opens the FIFO, as a service may that binds it
		// once its predecessor let go of the path.
		var (
			r       *running
			handoff string
			fifo    string
			g1      supervisor.Generation
		)
		// setup runs generation 1 in firstMode, then restarts into
		// generation 2, which places its socket late.
		setup := func(cfg supervisor.Config, firstMode string) {
			dir := GinkgoT().TempDir()
			handoff, fifo = filepath.Join(dir, "handoff.sock"), filepath.Join(dir, "fifo")
			Expect(unix.Mkfifo(fifo, 0o600)).To(Succeed())
			cfg.Handoff = handoff
			r = startMode(firstMode, cfg, "-handoff", handoff)
			g1 = r.serving(1)
			Eventually(dialUnix).WithArguments(handoff).Should(Succeed())
			r.mode("handoff-after " + fifo)
			g2, err := restart(r)
			Expect(err).NotTo(HaveOccurred())
			Expect(g2.N).To(Equal(2))
			r.mode("")
		}
		// release lets generation 2 place its hand-off socket.
		release := func() { openFIFO(fifo) }

		It("waits for the socket, and the successor takes the same listener", func() {
			setup(supervisor.Config{}, "")
			done := restartInBackground(r)
			Eventually(r.logs.with).WithArguments("restart waits for the serving generation's hand-off socket").ShouldNot(BeEmpty())
			Expect(r.status().Starting).To(BeNil(), "a generation started while no hand-off socket answered")
			Expect(done).NotTo(Receive())

			release()
			var g3 supervisor.Generation
			Eventually(done).Should(Receive(&g3))
			Expect(g3.N).To(Equal(3))
			Expect(addr(g3)).To(Equal(addr(g1)), "generation 3 does not serve the listener handed on")
			Expect(r.status().Restarts).To(Equal(2))
		})

		It("waits while the retiring generation still answers there, not only for an answer", func() {
			hold := filepath.Join(GinkgoT().TempDir(), "hold")
			Expect(unix.Mkfifo(hold, 0o600)).To(Succeed())
			setup(supervisor.Config{}, "hold-handoff "+hold)
			Eventually(r.out).Should(gbytes.Say(`\[gen 1\] holding the hand-off socket`))
			Expect(dialUnix(handoff)).To(Succeed(), "generation 1 lets go of the path")
			done := restartInBackground(r)
			Eventually(r.logs.with).WithArguments("restart waits for the serving generation's hand-off socket").Should(ContainElement(
				HaveKeyWithValue("err", MatchError(ContainSubstring("generation 1 (retiring) still answers there")))))
			Expect(r.status().Starting).To(BeNil(), "a generation started to meet the retiring one")

			By("letting generation 1 go, then generation 2 place its socket")
			openFIFO(hold)
			Eventually(r.out).Should(gbytes.Say(`\[gen 1\] stopped`))
			Expect(done).NotTo(Receive())
			release()
			var g3 supervisor.Generation
			Eventually(done).Should(Receive(&g3))
			Expect(addr(g3)).To(Equal(addr(g1)))
		})

		It("fails after ReadyTimeout when the socket never answers, and the serving generation goes on", func() {
			setup(supervisor.Config{ReadyTimeout: time.Second}, "")
			_, err := restart(r)
			Expect(err).To(MatchError(supervisor.ErrRestartFailed))
			Expect(err.Error()).To(ContainSubstring("generation 2's hand-off socket " + handoff + " did not answer within 1s"))
			st := r.status()
			Expect(st.Serving.N).To(Equal(2))
			Expect(st.Starting).To(BeNil())
			Expect(st.Failed).To(Equal(1))
			release()
		})
	})

	DescribeTable("recovers from the death of the serving generation with its stored listener: no connection refused, and the events say so in order",
		func(store string, handoff bool, kill func(r *running, g supervisor.Generation), exit supervisor.Exit) {
			var cfg supervisor.Config
			args := []string{store}
			if handoff {
				cfg.Handoff = filepath.Join(GinkgoT().TempDir(), "handoff.sock")
				args = append(args, "-handoff", cfg.Handoff)
			}
			r := start(cfg, args...)
			g1 := r.serving(1)
			Eventually(func() []string { return r.status().Stored }).Should(Equal([]string{"tcp"}))
			if handoff {
				Eventually(func() bool { return r.status().Standby }).Should(BeTrue(), "no standby hand-off socket")
			}

			stop := make(chan struct{})
			l := svctest.Dial("tcp", addr(g1), stop, 100000)
			Eventually(func() int { return r.status().Crashes }).Should(BeZero())
			kill(r, g1)
			g2 := r.serving(2)
			Expect(addr(g2)).To(Equal(addr(g1)))
			Expect(svctest.Answer("tcp", addr(g2))).To(Equal(fmt.Sprintf("pid %d", g2.PID)))
			close(stop)
			l.Wait()
			Expect(l.Refused).To(BeZero(), "connections refused")
			Expect(r.status().Crashes).To(Equal(1))
			if handoff {
				By("serving the store on the standby socket, placed at the path, and binding the next standby")
				Expect(r.logs.with("serving the store at the hand-off socket")).To(ConsistOf(HaveKeyWithValue("standby", true)))
				Eventually(func() bool { return r.status().Standby }).Should(BeTrue())
			}

			By("reporting the death with its exit status, the wait, and the successor")
			// Generation 2 stores the same listener again: the store does
			// not change, and no event says it did.
			Eventually(r.events.steps).Should(Equal([]string{
				"started 1", "stored 1", "ready 1", "died 1", "backoff 0s", "started 2", "ready 2",
			}))
			Expect(r.events.one(supervisor.EventStored, 1).Stored).To(Equal([]string{"tcp"}))
			died := r.events.one(supervisor.EventDied, 1)
			Expect(died.Gen).To(And(HaveField("PID", g1.PID), HaveField("State", "serving")))
			Expect(died.Exit).To(Equal(exit))
			Expect(r.events.one(supervisor.EventStarted, 2).Gen.PID).To(Equal(g2.PID))
		},
		Entry("SIGKILL, stored with FDSTORE=1, handed back by socket activation", "-fdstore", false, sigkill, supervisor.Exit{Gen: 1, Code: -1, Signal: syscall.SIGKILL}),
		Entry("a panic, stored with FDSTORE=1, handed back by socket activation", "-fdstore", false, panicking, supervisor.Exit{Gen: 1, Code: 2}),
		Entry("SIGKILL, stored with FDSTORE=1, handed back by the graceful protocol", "-fdstore", true, sigkill, supervisor.Exit{Gen: 1, Code: -1, Signal: syscall.SIGKILL}),
		Entry("a panic, stored with FDSTORE=1, handed back by the graceful protocol", "-fdstore", true, panicking, supervisor.Exit{Gen: 1, Code: 2}),
		Entry("SIGKILL, stored over the graceful protocol, handed back by socket activation", "-store-graceful", false, sigkill, supervisor.Exit{Gen: 1, Code: -1, Signal: syscall.SIGKILL}),
		Entry("SIGKILL, stored over the graceful protocol, handed back by the graceful protocol", "-store-graceful", true, sigkill, supervisor.Exit{Gen: 1, Code: -1, Signal: syscall.SIGKILL}),
	)

	It("backs off a crash loop, doubling the wait up to MaxBackoff", func() {
		r := start(supervisor.Config{MinBackoff: 50 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
		r.serving(1)
		r.mode("crash-after-ready")
		Expect(r.Signal(syscall.SIGUSR1)).To(BeTrue())
		Eventually(func() int { return len(r.events.waits()) }).WithTimeout(20 * time.Second).Should(BeNumerically(">=", 6))
		ms := time.Millisecond
		Expect(r.events.waits()[:6]).To(Equal([]time.Duration{0, 50 * ms, 100 * ms, 200 * ms, 400 * ms, 400 * ms}))
	})

	Describe("the descriptor store", func() {
		// storedBy starts a supervisor whose first generation stores its
		// listener as flag says, and returns it with that listener, once
		// the supervisor holds a close-on-exec duplicate of it.
		storedBy := func(flag string) (*running, harness.FD) {
			GinkgoHelper()
			r := start(supervisor.Config{}, flag)
			g1 := r.serving(1)
			Eventually(func() []string { return r.status().Stored }).Should(Equal([]string{"tcp"}))
			theirs := listenerOf(g1.PID)
			ours := findFd(os.Getpid(), theirs.ID)
			Expect(ours).NotTo(BeNil(), "the supervisor holds no duplicate of %v", theirs)
			Expect(ours.CloseOnExec()).To(BeTrue(), "%v", ours)
			return r, theirs
		}
		It("keeps close-on-exec duplicates of what a generation stores, once per socket, until FDSTOREREMOVE", func() {
			r, theirs := storedBy("-fdstore")

			By("restarting: the next generation gets it and stores it again, which keeps one copy")
			g2, err := restart(r)
			Expect(err).NotTo(HaveOccurred())
			Expect(listenerOf(g2.PID).ID).To(Equal(theirs.ID))
			Expect(r.status().Stored).To(Equal([]string{"tcp"}))

			By("restarting into a generation that removes it")
			r.mode("unstore")
			_, err = restart(r)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.status().Stored).To(BeEmpty())
			Expect(findFd(os.Getpid(), theirs.ID)).To(BeNil())
		})

		It("takes descriptors over the graceful protocol at $GRACEFUL_STORE from a generation's processes only", func() {
			r, _ := storedBy("-store-graceful")

			By("refusing a process of no generation (this one), which keeps what it offered")
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			defer ln.Close()
			c, err := graceful.Dial(filepath.Join(r.Dir(), "store.sock"))
			Expect(err).NotTo(HaveOccurred())
			defer c.Close()
			err = graceful.SendListenerTo(c, ln, graceful.Meta{"name": "intruder"})
			Expect(err).To(MatchError(ContainSubstring("not a process of a running generation")))
			Expect(r.status().Stored).To(Equal([]string{"tcp"}))
			// The supervisor logs after it told the peer.
			Eventually(func() []map[string]any { return r.logs.with("store socket: session failed") }).ShouldNot(BeEmpty())
		})

		It("serves one store connection at a time, and one that stalls holds the socket for one step (5 s) at most", func() {
			r := startMode("store-stall", supervisor.Config{}, "-store-graceful")
			g1 := r.serving(1)
			Eventually(r.out).Should(gbytes.Say(`\[gen 1\] stalling the store socket`))

			By("restarting: generation 2 stores over the graceful protocol behind generation 1's silent connection")
			r.mode("")
			g2, err := restart(r)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.logs.with("store socket: session failed")).To(ContainElement(And(
				HaveKeyWithValue("pid", BeEquivalentTo(g1.PID)),
				HaveKeyWithValue("err", MatchError(ContainSubstring("timeout")))),
			))
			Expect(r.logs.with("descriptors stored")).To(ContainElement(HaveKeyWithValue("gen", BeEquivalentTo(g2.N))))
		})

		It("hands stored descriptors to the generation only: its children see neither LISTEN_* nor the descriptors", func() {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			fd, err := dupOf(ln.(*net.TCPListener))
			Expect(err).NotTo(HaveOccurred())
			named := os.NewFile(uintptr(fd), "tcp")
			dump := filepath.Join(GinkgoT().TempDir(), "env")
			r := startMode("child-env "+dump, supervisor.Config{Store: []*os.File{named}})
			named.Close()
			ln.Close()

			g := r.serving(1)
			Expect(addr(g)).To(Equal(ln.Addr().String()), "the generation does not serve the stored listener")
			b, err := os.ReadFile(dump)
			Expect(err).NotTo(HaveOccurred())
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				Expect(line).NotTo(HavePrefix("env LISTEN_"))
				Expect(line).NotTo(HavePrefix("env GRACEFUL_SUPERVISOR"))
				// (Go's runtime keeps cgroup files and /dev/null open: only
				// sockets matter here.)
				if rest, ok := strings.CutPrefix(line, "fd "); ok {
					num, target, _ := strings.Cut(rest, " ")
					if n, _ := strconv.Atoi(num); n > 2 {
						Expect(target).NotTo(HavePrefix("socket:"), "the child inherited %s", line)
					}
				}
			}
		})
	})

	Describe("the notify socket", func() {
		It("ignores a process of no generation, and closes what it sent", func() {
			r := startMode("hang", supervisor.Config{})
			Eventually(r.out).Should(gbytes.Say(`\[gen 1\] serving`))
			var p [2]int
			Expect(unix.Pipe2(p[:], unix.O_CLOEXEC)).To(Succeed())
			defer unix.Close(p[0])
			defer unix.Close(p[1])
			sendNotify(filepath.Join(r.Dir(), "notify.sock"), "READY=1\nFDSTORE=1\nFDNAME=intruder", p[1])
			Eventually(r.logs.with).WithArguments("notification from a process of no generation: ignored").
				Should(ContainElement(HaveKeyWithValue("pid", int64(os.Getpid()))))
			st := r.status()
			Expect(st.Serving).To(BeNil())
			Expect(st.Starting.N).To(Equal(1))
			Expect(st.Stored).To(BeEmpty())
		})

		It("ignores a process of a generation that runs as another user", func() {
			if os.Geteuid() != 0 {
				Skip("needs root, to run a process as uid 65534")
			}
			// uid 65534 runs the service too: open the build directories.
			for dir := filepath.Dir(service); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
				Expect(os.Chmod(dir, 0o755)).To(Succeed())
				DeferCleanup(os.Chmod, dir, os.FileMode(0o700))
			}
			r := startMode("nobody-ready", supervisor.Config{})
			Eventually(r.out).Should(gbytes.Say(`\[gen 1\] uid 65534 said READY=1`))
			Eventually(r.logs.with).WithArguments("notification from a process of no generation: ignored").
				Should(ContainElement(HaveKeyWithValue("uid", int64(65534))))
			Expect(r.status().Serving).To(BeNil())
		})

		It("takes READY=1 and STATUS= from systemd-notify, run by a shell script", func() {
			notify, err := exec.LookPath("systemd-notify")
			if err != nil {
				Skip("systemd-notify is not installed")
			}
			r := start(supervisor.Config{Path: "/bin/sh", Args: []string{"-c", notify + ` --ready --status="shell $$"; exec sleep 1000`}})
			g := r.serving(1)
			Expect(g.Status).To(Equal(fmt.Sprintf("shell %d", g.PID)))
			r.Stop(syscall.SIGTERM)
			Expect(r.wait().exit).To(Equal(supervisor.Exit{Gen: 1, Code: -1, Signal: syscall.SIGTERM}))
		})

		It("follows MAINPID=: the stop signal goes to the main process the generation names", func() {
			r := startMode("mainpid", supervisor.Config{}, "-exit-code", "7")
			g := r.serving(1)
			Expect(g.MainPID).NotTo(Equal(g.PID))
			Expect(svctest.Answer("tcp", addr(g))).To(Equal(fmt.Sprintf("pid %d", g.MainPID)))
			r.Stop(syscall.SIGTERM)
			Expect(r.wait().exit.Gen).To(Equal(1))
			Expect(r.out).To(gbytes.Say(`\[gen 1\] stopped\n`))
			// An orphaned main process is reaped by whoever inherits it,
			// possibly after Run has returned.
			Eventually(unix.Kill).WithArguments(g.MainPID, syscall.Signal(0)).Should(MatchError(unix.ESRCH))
		})
	})
})

// dialUnix connects to the unix socket at path, and hangs up before the
// first byte (which a graceful.Server does not count as a session).
func dialUnix(path string) error {
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
	}
	return err
}

// openFIFO opens the FIFO at path for a moment, which lets a reader that
// waits for a writer go on.
func openFIFO(path string) {
	GinkgoHelper()
	f, err := os.OpenFile(path, os.O_RDWR, 0) // never blocks
	Expect(err).NotTo(HaveOccurred())
	Expect(f.Close()).To(Succeed())
}

// sendNotify sends state with fd attached to the notify socket at path.
func sendNotify(path, state string, fd int) {
	GinkgoHelper()
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	Expect(err).NotTo(HaveOccurred())
	defer unix.Close(s)
	Expect(unix.Sendmsg(s, []byte(state), unix.UnixRights(fd), &unix.SockaddrUnix{Name: path}, 0)).To(Succeed())
}

func sigkill(r *running, g supervisor.Generation) {
	GinkgoHelper()
	Expect(unix.Kill(g.PID, syscall.SIGKILL)).To(Succeed())
}

func panicking(r *running, g supervisor.Generation) {
	GinkgoHelper()
	Expect(r.Signal(syscall.SIGUSR1)).To(BeTrue())
}

// listenerOf is the listening TCP socket process pid holds.
func listenerOf(pid int) harness.FD {
	GinkgoHelper()
	fds, err := harness.ListFDs(pid)
	Expect(err).NotTo(HaveOccurred())
	for _, fd := range fds {
		if strings.HasPrefix(fd.Target, "socket:") && isListening(pid, fd.Num) {
			return fd
		}
	}
	Fail(fmt.Sprintf("process %d holds no listening socket: %v", pid, fds))
	return harness.FD{}
}

func isListening(pid, num int) bool {
	fd, err := pidfdGetfd(pid, num)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && v == 1
}

// pidfdGetfd takes a duplicate of descriptor num of process pid.
func pidfdGetfd(pid, num int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pidfd)
	return unix.PidfdGetfd(pidfd, num, 0)
}

// findFd returns process pid's descriptor that refers to id, if any.
func findFd(pid int, id harness.FileID) *harness.FD {
	GinkgoHelper()
	fds, err := harness.ListFDs(pid)
	Expect(err).NotTo(HaveOccurred())
	for _, fd := range fds {
		if fd.ID == id {
			return &fd
		}
	}
	return nil
}

// dupOf duplicates ln's descriptor, close-on-exec.
func dupOf(ln *net.TCPListener) (int, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}
