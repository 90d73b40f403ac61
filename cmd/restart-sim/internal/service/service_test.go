//go:build linux

package service

import (
	"bytes"
	"context"
	"log/slog"
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

var _ = Describe("the supervisor's log records, read as events", func() {
	var (
		s   *Service
		log *slog.Logger
		out bytes.Buffer
	)
	BeforeEach(func() {
		out.Reset()
		s = &Service{done: make(chan struct{}), gens: map[int]*Gen{}, changed: make(chan struct{})}
		log = slog.New(&events{s: s, out: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})})
	})

	It("follow each generation from its start to its exit", func() {
		log.Info("generation started", "gen", 1, "pid", 100, "fds", 0)
		log.Info("generation ready", "gen", 1, "pid", 100, "after", time.Millisecond)
		g, ok := s.Serving()
		Expect(ok).To(BeTrue())
		Expect(g.N).To(Equal(1))
		Expect(g.PID).To(Equal(100))

		log.Info("generation started", "gen", 2, "pid", 200, "fds", 1)
		g, ok = s.Starting(1, time.Second)
		Expect(ok).To(BeTrue())
		Expect(g.PID).To(Equal(200))
		log.Info("generation ready", "gen", 2, "pid", 200, "after", time.Millisecond)
		log.Info("generation exited", "gen", 1, "state", "retiring", "exit", supervisor.Exit{Gen: 1})
		g, ok = s.AwaitExit(1, time.Second)
		Expect(ok).To(BeTrue())
		Expect(g).To(And(HaveField("OK", true), HaveField("State", "retiring"), HaveField("Exit", "exit status 0")))
		g, _ = s.Serving()
		Expect(g.N).To(Equal(2))

		By("a crash, logged as an error, reaches the log writer too")
		log.Error("serving generation died", "gen", 2, "pid", 200, "exit", supervisor.Exit{Gen: 2, Code: -1, Signal: syscall.SIGKILL})
		g, _ = s.Gen(2)
		Expect(g).To(And(HaveField("Died", true), HaveField("OK", false), HaveField("Exit", "killed by signal killed")))
		_, ok = s.Serving()
		Expect(ok).To(BeFalse())
		Expect(out.String()).To(ContainSubstring("serving generation died"))
		Expect(out.String()).NotTo(ContainSubstring("generation started"), "info records are not forwarded unless verbose")

		log.Info("generation started", "gen", 3, "pid", 300, "fds", 4)
		log.Error("restart failed, rolled back", "gen", 3, "reason", "generation 3 was not ready within 1s", "serving", 2)
		log.Debug("reaped an orphan", "pid", 301, "exit", supervisor.Exit{})
		g, _ = s.Gen(3)
		Expect(g.Failed).To(Equal("generation 3 was not ready within 1s"))
		Expect(s.Orphans()).To(Equal(1))
		Expect(s.Generations()).To(HaveLen(3))
	})

	It("follow the main process a generation names with MAINPID=", func() {
		log.Info("generation started", "gen", 1, "pid", 100, "fds", 0)
		log.Info("generation's main process changed", "gen", 1, "main_pid", 101)
		g, _ := s.Gen(1)
		Expect([]int{g.PID, g.MainPID}).To(Equal([]int{100, 101}))
	})

	It("keep attributes given to With", func() {
		log.With("gen", 7).Info("generation started", "pid", 700)
		g, ok := s.Gen(7)
		Expect(ok).To(BeTrue())
		Expect(g.PID).To(Equal(700))
	})

	It("wait no longer than told", func() {
		start := time.Now()
		_, ok := s.AwaitExit(9, 50*time.Millisecond)
		Expect(ok).To(BeFalse())
		Expect(time.Since(start)).To(BeNumerically("<", 10*time.Second))
		Expect(s.events().Enabled(context.Background(), slog.LevelDebug)).To(BeTrue())
	})
})

// events returns the handler s is fed by, for Enabled.
func (s *Service) events() slog.Handler {
	return &events{s: s, out: slog.NewTextHandler(&bytes.Buffer{}, nil)}
}
