//go:build linux

package supervisor_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/supervisor"
)

var _ = Describe("events", func() {
	It("report a restart in order, each with its generation, and the exit status of the one replaced", func() {
		r := start(supervisor.Config{}, "-exit-code", "5")
		g1 := r.serving(1)
		g2, err := restart(r)
		Expect(err).NotTo(HaveOccurred())

		Eventually(r.events.steps).Should(Equal([]string{
			"started 1", "ready 1",
			"restart-requested 1", "started 2", "ready 2", "restarted 2", "retiring 1", "exited 1",
		}))
		exited := r.events.one(supervisor.EventExited, 1)
		started := r.events.one(supervisor.EventStarted, 2)
		Expect(started.Gen).To(And(HaveField("PID", g2.PID), HaveField("MainPID", g2.PID), HaveField("State", "starting")))
		Expect(started.Time).To(Equal(started.Gen.Started))
		status := r.events.one(supervisor.EventStatus, 2)
		Expect(status.Gen.Status).To(Equal(g2.Status))
		ready := r.events.one(supervisor.EventReady, 2)
		Expect(ready.Gen).To(And(HaveField("PID", g2.PID), HaveField("State", "serving"), HaveField("Status", g2.Status)))
		Expect(ready.Time).To(Equal(ready.Gen.Ready))
		Expect(ready.Gen.Ready).To(Equal(g2.Ready))
		Expect(r.events.one(supervisor.EventRestartRequested, 1).Gen.PID).To(Equal(g1.PID))
		Expect(r.events.one(supervisor.EventRetiring, 1).Gen).To(And(HaveField("PID", g1.PID), HaveField("State", "retiring")))
		Expect(exited.Gen).To(And(HaveField("PID", g1.PID), HaveField("State", "retiring")))
		Expect(exited.Exit).To(Equal(supervisor.Exit{Gen: 1, Code: 5}))

		By("in the order of time, too")
		all := r.events.all()
		for i := 1; i < len(all); i++ {
			Expect(all[i].Time).NotTo(BeTemporally("<", all[i-1].Time), "event %d (%s) before event %d (%s)", i, all[i].Kind, i-1, all[i-1].Kind)
		}
	})

	It("report the waits of a crash loop, doubling up to MaxBackoff, and each failed start", func() {
		r := start(supervisor.Config{MinBackoff: 50 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
		r.serving(1)
		r.mode("exit")
		Expect(r.Signal(syscall.SIGUSR1)).To(BeTrue())
		r.events.one(supervisor.EventStartFailed, 5)
		r.mode("") // for generation 6, or a later one if 6 read the mode first
		Eventually(func() *supervisor.Generation { return r.status().Serving }).ShouldNot(BeNil())

		waits := r.events.waits()
		ms := time.Millisecond
		Expect(len(waits)).To(BeNumerically(">=", 5))
		Expect(waits[:5]).To(Equal([]time.Duration{0, 50 * ms, 100 * ms, 200 * ms, 400 * ms}))
		Expect(waits[5:]).To(Or(BeEmpty(), HaveEach(400*ms)), "beyond MaxBackoff")
		for n := 2; n <= 5; n++ {
			failed := r.events.one(supervisor.EventStartFailed, n)
			Expect(failed.Err).To(MatchError(ContainSubstring("generation %d exited before it was ready (exit status 3)", n)))
			Expect(r.events.find(supervisor.EventRestartFailed, n)).To(BeEmpty(), "generation %d was no restart's", n)
		}
	})

	It("report an orphan the supervisor reaped, with its exit status", func() {
		// This process stays a child subreaper after Run: not for the
		// specs that follow.
		DeferCleanup(unix.Prctl, unix.PR_SET_CHILD_SUBREAPER, uintptr(0), uintptr(0), uintptr(0), uintptr(0))
		r := startMode("orphan", supervisor.Config{ReapOrphans: true})
		r.serving(1)
		Eventually(r.out).Should(gbytes.Say(`\[gen 1\] orphan \d+\n`))
		m := regexp.MustCompile(`\[gen 1\] orphan (\d+)`).FindSubmatch(r.out.Contents())
		pid, err := strconv.Atoi(string(m[1]))
		Expect(err).NotTo(HaveOccurred())

		By("restarting: generation 1 exits, and its child, left to the supervisor, when it sees that")
		r.mode("")
		_, err = restart(r)
		Expect(err).NotTo(HaveOccurred())
		orphan := func() []supervisor.Event {
			var got []supervisor.Event
			for _, e := range r.events.all() {
				if e.Kind == supervisor.EventOrphan && e.Gen.PID == pid {
					got = append(got, e)
				}
			}
			return got
		}
		Eventually(orphan).Should(HaveLen(1))
		Expect(orphan()[0].Gen.N).To(BeZero())
		Expect(orphan()[0].Exit).To(Equal(supervisor.Exit{Code: 0}))
		Expect(r.status().Orphans).To(Equal(1))
	})

	It("let the callback call Status, Restart and Stop without a deadlock, and Run return after the last event", func() {
		type call struct {
			kind supervisor.EventKind
			gen  int
			ok   bool // Status answered
		}
		var (
			s         *supervisor.Supervisor
			mu        sync.Mutex
			calls     []call
			restarted = make(chan supervisor.Generation, 1)
		)
		var err error
		s, err = supervisor.New(supervisor.Config{
			Path: service, Stdout: GinkgoWriter, Stderr: GinkgoWriter,
			Events: func(e supervisor.Event) {
				_, ok := s.Status()
				mu.Lock()
				calls = append(calls, call{e.Kind, e.Gen.N, ok})
				mu.Unlock()
				switch {
				case e.Kind == supervisor.EventReady && e.Gen.N == 1:
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					g, err := s.Restart(ctx) // its own events queue meanwhile
					if err != nil {
						fmt.Fprintln(GinkgoWriter, "Restart:", err)
					}
					restarted <- g
				case e.Kind == supervisor.EventRetiring:
					s.Stop(syscall.SIGTERM)
				}
			},
		})
		Expect(err).NotTo(HaveOccurred())
		done := make(chan supervisor.Exit, 1)
		go func() {
			exit, _ := s.Run(context.Background())
			done <- exit
		}()
		DeferCleanup(func() {
			go s.Stop(syscall.SIGKILL) // would block if the callback had deadlocked Run
			Eventually(done).Should(Receive())
		})

		Eventually(restarted).Should(Receive(HaveField("N", 2)), "Restart called from the callback")
		var exit supervisor.Exit
		Eventually(done).Should(Receive(&exit), "Run did not return after Stop called from the callback")
		done <- exit
		Expect(exit).To(Equal(supervisor.Exit{Gen: 2, Code: 0}))

		mu.Lock()
		defer mu.Unlock()
		Expect(calls[0]).To(Equal(call{supervisor.EventStarted, 1, true}), "Status called from the first event")
		Expect(calls).To(ContainElement(call{supervisor.EventRestarted, 2, true}))
		var stopping bool
		var exits []int
		for _, c := range calls {
			stopping = stopping || c.kind == supervisor.EventStopping
			if c.kind == supervisor.EventExited {
				exits = append(exits, c.gen)
			}
		}
		Expect(stopping).To(BeTrue(), "no stopping event")
		Expect(exits).To(ConsistOf(1, 2), "every generation's exit was delivered before Run returned")
	})
})
