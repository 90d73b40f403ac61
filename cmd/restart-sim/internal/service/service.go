//go:build linux

// Package service runs the service under test, the demo service or a
// program of the user's, under the project's supervisor (package
// supervisor), and records each generation's life for the report from the
// supervisor's events (supervisor.Config.Events): when it started, became
// ready and exited, and how. The supervisor's log messages go, from
// warnings up (everything with Verbose), to the log writer.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/supervisor"
)

// ErrNotServing: no generation became ready in time.
var ErrNotServing = errors.New("service: no generation serves")

// Config is how the service runs.
type Config struct {
	Path string   // the program of every generation
	Args []string // its arguments
	Env  []string // its environment; nil: this process's
	// Dir is the supervisor's runtime directory (notify and control
	// sockets); empty: a temporary one.
	Dir string
	// Handoff is the service's graceful hand-off socket: after a crash the
	// supervisor serves its store there. Empty: by socket activation.
	Handoff      string
	ReadyTimeout time.Duration // a new generation's READY=1
	StopTimeout  time.Duration // a generation's exit after SIGTERM
	// CrashSafety keeps the descriptors generations store with the
	// supervisor; false turns the store off.
	CrashSafety bool
	// Spare keeps the next generation started in advance, waiting for a
	// crash (supervisor.Config.Spare).
	Spare   bool
	Output  io.Writer // the generations' output; nil discards it
	Log     io.Writer // the supervisor's warnings and errors; nil discards them
	Verbose bool      // all of the supervisor's messages to Log
}

// Gen is what happened to one generation.
type Gen struct {
	N, PID  int
	MainPID int // the process it named with MAINPID=, or PID
	Started time.Time
	Ready   time.Time // zero: never ready
	Exited  time.Time // zero: still running
	Exit    string    // "exit status 0", "killed by signal ..."
	OK      bool      // exited with status 0
	// State is what the generation was when it exited: "starting",
	// "serving", "retiring" or "failed" (killed after a failed start).
	State string
	// Died: it was serving and exited on its own.
	Died bool
	// Failed says why it was removed when it did not take over (the
	// supervisor's error).
	Failed string
}

// Service is a running service.
type Service struct {
	cfg  Config
	sup  *supervisor.Supervisor
	done chan struct{} // Run returned
	exit supervisor.Exit
	err  error

	mu      sync.Mutex
	gens    map[int]*Gen
	orphans int
	changed chan struct{} // closed and replaced on every event
}

// Start starts the supervisor and waits until the first generation serves.
func Start(cfg Config) (*Service, error) {
	s := &Service{cfg: cfg, done: make(chan struct{}), gens: map[int]*Gen{}, changed: make(chan struct{})}
	level := slog.LevelWarn
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	logOut := cfg.Log
	if logOut == nil {
		logOut = io.Discard
	}
	store := 0
	if !cfg.CrashSafety {
		store = -1
	}
	sup, err := supervisor.New(supervisor.Config{
		Path: cfg.Path, Args: cfg.Args, Env: cfg.Env, Dir: cfg.Dir, Handoff: cfg.Handoff,
		ReadyTimeout: cfg.ReadyTimeout, StopTimeout: cfg.StopTimeout, FdStoreMax: store,
		ReapOrphans: true, Stdout: cfg.Output, Stderr: cfg.Output, Spare: cfg.Spare,
		Logger: slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level})),
		Events: s.note,
	})
	if err != nil {
		return nil, err
	}
	s.sup = sup
	go func() {
		defer close(s.done)
		s.exit, s.err = sup.Run(context.Background())
	}()
	if !s.await(func() bool { return s.servingLocked() != nil }, cfg.ReadyTimeout+time.Second) {
		s.Stop()
		if s.err != nil {
			return nil, s.err
		}
		return nil, fmt.Errorf("%w: the first generation did not say READY=1 within %v", ErrNotServing, cfg.ReadyTimeout)
	}
	return s, nil
}

// AwaitStandby waits, at most d, until the supervisor has bound its
// standby hand-off socket (supervisor.Status.Standby), which it does
// once a generation stored descriptors, and, with a spare, until the
// spare waits, so that descriptor counts taken
// before and after a run compare like with like. It reports whether it
// did; without a hand-off path or anything stored there is none to wait
// for.
func (s *Service) AwaitStandby(d time.Duration) bool {
	// Status runs on the supervisor's own goroutine, after what it does
	// once a generation is ready (the next start's pipes, made in
	// advance): those descriptors are counted at the start too.
	s.sup.Status()
	if s.cfg.Handoff == "" || !s.cfg.CrashSafety {
		return false
	}
	deadline := time.Now().Add(d)
	for {
		st, ok := s.sup.Status()
		if !ok || len(st.Stored) == 0 {
			return false
		}
		if st.Standby && (!s.cfg.Spare || st.SpareWaiting) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond) // the supervisor reports no event for it
	}
}

// Serving returns the generation that serves now.
func (s *Service) Serving() (Gen, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.servingLocked(); g != nil {
		return *g, true
	}
	return Gen{}, false
}

// servingLocked is the newest generation that is ready and has not exited.
func (s *Service) servingLocked() *Gen {
	var best *Gen
	for _, g := range s.gens {
		if !g.Ready.IsZero() && g.Exited.IsZero() && (best == nil || g.N > best.N) {
			best = g
		}
	}
	return best
}

// Gen returns generation n as it is now.
func (s *Service) Gen(n int) (Gen, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.gens[n]; g != nil {
		return *g, true
	}
	return Gen{}, false
}

// Restart asks the supervisor for a restart and waits for its outcome, at
// most d. It returns the generation that took over, or the error: one
// matching supervisor.ErrRestartFailed when the new generation was removed
// and the serving one went on.
func (s *Service) Restart(d time.Duration) (Gen, error) {
	deadline := time.Now().Add(d)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	g, err := s.sup.Restart(ctx)
	if err != nil {
		return Gen{}, err
	}
	// Its ready event was queued before Restart returned, and is delivered
	// on the supervisor's event goroutine: wait for it, so that Serving
	// names the new generation from now on.
	var got Gen
	s.await(func() bool {
		if n := s.gens[g.N]; n != nil && !n.Ready.IsZero() {
			got = *n
			return true
		}
		return false
	}, time.Until(deadline))
	if got.N == 0 { // not seen in time: what the supervisor said
		got = Gen{N: g.N, PID: g.PID, MainPID: g.MainPID, Started: g.Started, Ready: g.Ready, State: g.State}
	}
	return got, nil
}

// Starting returns the generation being started, once the supervisor has
// started it (at most d).
func (s *Service) Starting(after int, d time.Duration) (Gen, bool) {
	var found Gen
	ok := s.await(func() bool {
		for _, g := range s.gens {
			if g.N > after {
				found = *g
				return true
			}
		}
		return false
	}, d)
	return found, ok
}

// Crash sends sig to the serving generation, which must die, and waits, at
// most d, for the next one to serve. It returns the victim and its
// successor as they are then, and when sig was sent.
func (s *Service) Crash(sig syscall.Signal, signal func(pid int, sig syscall.Signal) error, d time.Duration) (victim, next Gen, at time.Time, err error) {
	victim, ok := s.Serving()
	if !ok {
		return victim, next, at, ErrNotServing
	}
	at = time.Now()
	if err := signal(victim.MainPID, sig); err != nil {
		return victim, next, at, err
	}
	ok = s.await(func() bool {
		v, n := s.gens[victim.N], s.servingLocked()
		if !v.Exited.IsZero() && n != nil && n.N > victim.N {
			victim, next = *v, *n
			return true
		}
		return false
	}, d)
	if !ok {
		victim, _ = s.Gen(victim.N)
		return victim, next, at, fmt.Errorf("%w: no generation served within %v of the fault", ErrNotServing, d)
	}
	return victim, next, at, nil
}

// AwaitExit waits, at most d, until generation n has exited.
func (s *Service) AwaitExit(n int, d time.Duration) (Gen, bool) {
	var got Gen
	ok := s.await(func() bool {
		g := s.gens[n]
		if g != nil && !g.Exited.IsZero() {
			got = *g
			return true
		}
		return false
	}, d)
	if !ok {
		got, _ = s.Gen(n)
	}
	return got, ok
}

// Stop stops the service (SIGTERM to every generation) and waits until
// every generation has exited. It returns how the serving one exited.
func (s *Service) Stop() (supervisor.Exit, error) {
	s.sup.Stop(syscall.SIGTERM)
	<-s.done
	return s.exit, s.err
}

// Generations returns every generation started, in order.
func (s *Service) Generations() []Gen {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Gen, 0, len(s.gens))
	for _, g := range s.gens {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b Gen) int { return a.N - b.N })
	return out
}

// Orphans counts the processes the supervisor reaped without having
// started them.
func (s *Service) Orphans() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.orphans
}

// await waits until cond, called with s.mu held, is true, at most d. It
// reports false when d passed or the supervisor stopped first.
func (s *Service) await(cond func() bool, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		ok, changed := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-s.done:
			s.mu.Lock()
			defer s.mu.Unlock()
			return cond()
		case <-t.C:
			return false
		}
	}
}

// note applies one supervisor event; the supervisor calls it, in order,
// on a goroutine of its own.
func (s *Service) note(e supervisor.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gens[e.Gen.N]
	switch e.Kind {
	case supervisor.EventStarted:
		g = &Gen{N: e.Gen.N, PID: e.Gen.PID, MainPID: e.Gen.MainPID, Started: e.Gen.Started}
		s.gens[g.N] = g
	case supervisor.EventMainPID:
		if g != nil {
			g.MainPID = e.Gen.MainPID
		}
	case supervisor.EventReady:
		if g != nil {
			g.Ready = e.Gen.Ready
		}
	case supervisor.EventExited, supervisor.EventDied:
		if g != nil {
			g.Exited, g.Exit, g.OK = e.Time, e.Exit.String(), e.Exit.Code == 0 && e.Exit.Signal == 0
			g.State, g.Died = e.Gen.State, e.Kind == supervisor.EventDied
		}
	case supervisor.EventStartFailed, supervisor.EventRestartFailed:
		if g != nil && e.Err != nil {
			g.Failed = e.Err.Error()
		}
	case supervisor.EventOrphan:
		s.orphans++
	default:
		return
	}
	close(s.changed)
	s.changed = make(chan struct{})
}
