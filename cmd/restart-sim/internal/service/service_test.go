//go:build linux

package service

import (
	"errors"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/supervisor"
)

func TestService(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "restart-sim service")
}

var _ = Describe("the supervisor's events", func() {
	var s *Service
	BeforeEach(func() {
		s = &Service{done: make(chan struct{}), gens: map[int]*Gen{}, changed: make(chan struct{})}
	})
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	event := func(kind supervisor.EventKind, n, pid int, state string) supervisor.Event {
		return supervisor.Event{Kind: kind, Time: at, Gen: supervisor.Generation{
			N: n, PID: pid, MainPID: pid, State: state, Started: at, Ready: at.Add(time.Millisecond),
		}}
	}

	It("follow each generation from its start to its exit", func() {
		s.note(event(supervisor.EventStarted, 1, 100, "starting"))
		s.note(event(supervisor.EventReady, 1, 100, "serving"))
		g, ok := s.Serving()
		Expect(ok).To(BeTrue())
		Expect(g).To(And(HaveField("N", 1), HaveField("PID", 100), HaveField("Started", at), HaveField("Ready", at.Add(time.Millisecond))))

		s.note(event(supervisor.EventStarted, 2, 200, "starting"))
		g, ok = s.Starting(1, time.Second)
		Expect(ok).To(BeTrue())
		Expect(g.PID).To(Equal(200))
		s.note(event(supervisor.EventReady, 2, 200, "serving"))
		exited := event(supervisor.EventExited, 1, 100, "retiring")
		exited.Exit = supervisor.Exit{Gen: 1}
		s.note(exited)
		g, ok = s.AwaitExit(1, time.Second)
		Expect(ok).To(BeTrue())
		Expect(g).To(And(HaveField("OK", true), HaveField("State", "retiring"), HaveField("Exit", "exit status 0"), HaveField("Exited", at)))
		g, _ = s.Serving()
		Expect(g.N).To(Equal(2))

		By("a crash")
		died := event(supervisor.EventDied, 2, 200, "serving")
		died.Exit = supervisor.Exit{Gen: 2, Code: -1, Signal: syscall.SIGKILL}
		s.note(died)
		g, _ = s.Gen(2)
		Expect(g).To(And(HaveField("Died", true), HaveField("OK", false), HaveField("Exit", "killed by signal killed")))
		_, ok = s.Serving()
		Expect(ok).To(BeFalse())

		By("a failed start, and an orphan")
		s.note(event(supervisor.EventStarted, 3, 300, "starting"))
		failed := event(supervisor.EventStartFailed, 3, 300, "failed")
		failed.Err = errors.New("generation 3 was not ready within 1s")
		s.note(failed)
		s.note(supervisor.Event{Kind: supervisor.EventOrphan, Gen: supervisor.Generation{PID: 301}})
		g, _ = s.Gen(3)
		Expect(g.Failed).To(Equal("generation 3 was not ready within 1s"))
		Expect(s.Orphans()).To(Equal(1))
		Expect(s.Generations()).To(HaveLen(3))
	})

	It("follow the main process a generation names with MAINPID=", func() {
		s.note(event(supervisor.EventStarted, 1, 100, "starting"))
		mainPID := event(supervisor.EventMainPID, 1, 100, "starting")
		mainPID.Gen.MainPID = 101
		s.note(mainPID)
		g, _ := s.Gen(1)
		Expect([]int{g.PID, g.MainPID}).To(Equal([]int{100, 101}))
	})

	It("ignore a restart whose generation could not be started", func() {
		failed := event(supervisor.EventRestartFailed, 4, 0, "failed")
		failed.Err = supervisor.ErrRestartFailed
		s.note(failed)
		Expect(s.Generations()).To(BeEmpty())
	})

	It("wait no longer than told", func() {
		start := time.Now()
		_, ok := s.AwaitExit(9, 50*time.Millisecond)
		Expect(ok).To(BeFalse())
		Expect(time.Since(start)).To(BeNumerically("<", 10*time.Second))
	})
})
