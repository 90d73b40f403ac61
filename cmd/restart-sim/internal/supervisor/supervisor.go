//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/control"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/generation"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
	"github.com/gracefulfd/graceful/harness"
)

// Errors of the supervisor, returned wrapped with detail.
var (
	// ErrStart: a generation could not be started or did not become ready.
	ErrStart = errors.New("supervisor: generation did not start")
	// ErrNoGeneration: no generation is serving any more (the current one
	// died): the run cannot go on.
	ErrNoGeneration = errors.New("supervisor: no generation is serving")
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultReadyTimeout = 2 * time.Second
)

// Config is how the supervisor runs generations. Its zero value needs Dir.
type Config struct {
	// Exe is the restart-sim binary to start generations from; empty means
	// this process's executable.
	Exe string
	// Dir is a private (0700) directory for the hand-off sockets and the
	// shared file.
	Dir string
	// Timeout bounds each step of a hand-off and of a drain; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// ReadyTimeout is how long a generation waits for its successor's
	// READY; 0 means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// LineWriters is the number of line writers of the file load (0: none),
	// each writing LineRate lines a second (0 means 100).
	LineWriters int
	LineRate    float64
	// Origin is the time the attempts' times count from; zero means the
	// time of Start.
	Origin time.Time
	// Lifetime bounds the whole run: every control channel read is given
	// this long. 0 means one hour.
	Lifetime time.Duration
	// Stderr receives the generations' output (they print only on
	// errors). Nil discards it.
	Stderr io.Writer
	// Env is passed to every generation (besides what the harness adds).
	Env []string
	// Reaper, when set, is told about every generation, so that it leaves
	// them to the harness.
	Reaper *Reaper
	// Defect is passed to every generation (generation.Defects).
	Defect string
}

// Addrs are the service's addresses, fixed for the whole run.
type Addrs struct {
	HTTP, Stream, UDP string
}

// gen is one generation as the supervisor sees it.
type gen struct {
	n     int
	fault string
	sock  string
	proc  *harness.Process
	msgs  chan control.Message // closed when its control channel ends
	rec   report.Generation
	exit  control.Message // its exit message, if any
}

// Supervisor starts generation 0, replaces the current generation on
// Restart, and stops the last one on Stop. It reaps every generation. It
// is not safe for concurrent use: one goroutine drives it.
type Supervisor struct {
	cfg     Config
	start   time.Time
	file    string
	current *gen
	gens    []*gen
	next    int
}

// New returns a supervisor; nothing runs before Start.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Dir == "" {
		return nil, errors.New("supervisor: Config.Dir is empty")
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("supervisor: find the executable: %w", err)
		}
		cfg.Exe = exe
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.LineRate <= 0 {
		cfg.LineRate = 100
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = time.Hour
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	return &Supervisor{cfg: cfg, file: filepath.Join(cfg.Dir, "lines.log")}, nil
}

// File is the path of the shared append-only file.
func (s *Supervisor) File() string { return s.file }

// LineWriters is the number of line writers of the file load.
func (s *Supervisor) LineWriters() int { return s.cfg.LineWriters }

// Start starts generation 0 and waits until it serves.
func (s *Supervisor) Start() (Addrs, error) {
	s.start = s.cfg.Origin
	if s.start.IsZero() {
		s.start = time.Now()
	}
	g, err := s.spawn("", "")
	if err != nil {
		return Addrs{}, err
	}
	deadline := time.NewTimer(s.cfg.Timeout * 2)
	defer deadline.Stop()
	for {
		select {
		case m, ok := <-g.msgs:
			if !ok {
				s.finish(g, report.Failed)
				return Addrs{}, fmt.Errorf("%w: generation 0 ended: %s", ErrStart, g.rec.Exit)
			}
			g.note(m)
			if m.Type == control.Ready {
				s.current = g
				return Addrs{HTTP: m.HTTPAddr, Stream: m.StreamAddr, UDP: m.UDPAddr}, nil
			}
		case <-deadline.C:
			s.kill(g, report.Failed)
			return Addrs{}, fmt.Errorf("%w: generation 0 not ready within %v", ErrStart, s.cfg.Timeout*2)
		}
	}
}

// spawn starts the next generation, taking over from the socket from
// (empty for generation 0).
func (s *Supervisor) spawn(from, fault string) (*gen, error) {
	n := s.next
	s.next++
	g := &gen{
		n: n, fault: fault, sock: filepath.Join(s.cfg.Dir, fmt.Sprintf("g%d.sock", n)),
		msgs: make(chan control.Message, 16),
		rec: report.Generation{Gen: n, Fault: fault, FdsAfterHandoff: -1, FdsAtExit: -1,
			Served: map[string]int64{}, Serves: map[string]string{}},
	}
	args := generation.Args(generation.Config{
		Gen: n, From: from, At: g.sock, File: s.file, Fault: fault,
		ReadyTimeout: s.cfg.ReadyTimeout, Timeout: s.cfg.Timeout,
		LineWriters: s.cfg.LineWriters, LineRate: s.cfg.LineRate, Defect: s.cfg.Defect,
	})
	var proc *harness.Process
	var err error
	s.cfg.Reaper.Manage(func() int {
		proc, err = harness.Start(harness.Cmd{
			Path: s.cfg.Exe, Args: args, Env: s.cfg.Env, Control: true,
			Stdout: s.cfg.Stderr, Stderr: s.cfg.Stderr,
		})
		if err != nil {
			return 0
		}
		return proc.Pid()
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	g.proc = proc
	g.rec.PID = proc.Pid()
	proc.Control().Timeout = s.cfg.Lifetime
	s.gens = append(s.gens, g)
	go func() {
		defer close(g.msgs)
		for {
			raw, err := proc.Control().Recv()
			if err != nil {
				return
			}
			var m control.Message
			if raw.Decode(&m) == nil {
				g.msgs <- m
			}
		}
	}()
	return g, nil
}

// Restart replaces the current generation with a new one started with
// fault ("" for none), and returns what happened. On success the old
// generation has drained and exited; on failure the new one is killed and
// the old one, which must have reported the failed hand-off, keeps
// serving. The error is not nil only when no generation serves any more.
func (s *Supervisor) Restart(index int, fault string) (report.Attempt, error) {
	old := s.current
	begin := time.Now()
	a := report.Attempt{Index: index, From: old.n, Fault: fault, AtS: begin.Sub(s.start).Seconds()}
	g, err := s.spawn(old.sock, fault)
	if err != nil {
		a.Error = err.Error()
		return a, nil
	}
	a.Gen = g.n

	var newReady, oldHandedOff, oldFailed bool
	var problem string
	deadline := time.NewTimer(s.cfg.ReadyTimeout + 3*s.cfg.Timeout)
	defer deadline.Stop()
	newMsgs, oldMsgs := g.msgs, old.msgs
	for problem == "" && !oldFailed && !(newReady && oldHandedOff) {
		select {
		case m, ok := <-newMsgs:
			if !ok {
				newMsgs = nil
				if !newReady {
					problem = "the new generation ended before it was ready"
				}
				continue
			}
			g.note(m)
			switch m.Type {
			case control.Receiving:
				if fault == generation.FaultKill {
					g.proc.Signal(syscall.SIGKILL)
				}
			case control.Ready:
				newReady = true
				a.HandoffMs = msSince(begin)
				a.SessionMs = m.SessionMs
			}
		case m, ok := <-oldMsgs:
			if !ok {
				oldMsgs = nil
				if !oldHandedOff {
					problem = "the old generation ended during the hand-off"
				}
				continue
			}
			old.note(m)
			if m.Type == control.Handoff {
				oldHandedOff, oldFailed = m.OK, !m.OK
				if !m.OK {
					a.Error = m.Err
				}
			}
		case <-deadline.C:
			problem = "no outcome within " + (s.cfg.ReadyTimeout + 3*s.cfg.Timeout).String()
		}
	}

	if newReady && oldHandedOff {
		readyAt := time.Now()
		s.current = g
		a.OK = true
		s.retire(old)
		a.DrainMs = msSince(readyAt)
		if old.rec.Outcome != report.Retired {
			a.OK = false
			a.Error = "the old generation did not drain cleanly: " + old.rec.Exit
		}
		return a, nil
	}

	// Rollback: remove the new generation; the old one must have said that
	// it goes on serving.
	s.kill(g, report.RolledBack)
	if !oldFailed && oldMsgs != nil {
		oldFailed = s.awaitHandoffFailure(old, &a)
	}
	if problem != "" {
		a.Error = strings.TrimPrefix(a.Error+"; "+problem, "; ")
	}
	a.RolledBack = oldFailed && alive(old)
	if !alive(old) {
		s.finish(old, report.Failed)
		return a, fmt.Errorf("%w: generation %d ended (%s)", ErrNoGeneration, old.n, old.rec.Exit)
	}
	return a, nil
}

// awaitHandoffFailure waits for old to report its failed hand-off after the
// new generation was killed.
func (s *Supervisor) awaitHandoffFailure(old *gen, a *report.Attempt) bool {
	t := time.NewTimer(s.cfg.ReadyTimeout + s.cfg.Timeout)
	defer t.Stop()
	for {
		select {
		case m, ok := <-old.msgs:
			if !ok {
				return false
			}
			old.note(m)
			if m.Type == control.Handoff {
				if !m.OK && a.Error == "" {
					a.Error = m.Err
				}
				return !m.OK
			}
		case <-t.C:
			return false
		}
	}
}

// retire waits for a generation that handed over to drain and exit.
func (s *Supervisor) retire(g *gen) {
	s.awaitExit(g, 2*s.cfg.Timeout)
	outcome := report.Retired
	if exit, ok := g.proc.Exit(); !ok || !exit.Success() || g.exit.Type != control.Exit {
		outcome = report.Failed
	}
	s.finish(g, outcome)
}

// Stop sends SIGTERM to the current generation (it drains and exits) and
// waits for it. It is the supervisor's answer to its own SIGTERM/SIGINT
// too.
func (s *Supervisor) Stop() error {
	g := s.current
	if g == nil {
		return nil
	}
	s.current = nil
	g.proc.Signal(syscall.SIGTERM)
	s.awaitExit(g, 2*s.cfg.Timeout)
	outcome := report.Final
	if exit, ok := g.proc.Exit(); !ok || !exit.Success() || g.exit.Type != control.Exit {
		outcome = report.Failed
	}
	s.finish(g, outcome)
	if outcome == report.Failed {
		return fmt.Errorf("supervisor: generation %d did not stop cleanly: %s", g.n, g.rec.Exit)
	}
	return nil
}

// awaitExit reads g's messages until its control channel ends and it has
// been reaped, at most d; then it kills it if it still runs.
func (s *Supervisor) awaitExit(g *gen, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	msgs := g.msgs
	for msgs != nil {
		select {
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			g.note(m)
		case <-t.C:
			g.proc.Kill()
			return
		}
	}
	select {
	case <-g.proc.Done():
	case <-t.C:
		g.proc.Kill()
	}
}

// kill ends g at once and records outcome.
func (s *Supervisor) kill(g *gen, outcome string) {
	g.proc.Kill()
	for range g.msgs { // the channel closes: Kill closed the control channel
	}
	s.finish(g, outcome)
}

// finish records how g ended and releases what the supervisor held for it.
func (s *Supervisor) finish(g *gen, outcome string) {
	exit, err := g.proc.Kill() // reaps it and closes the control channel; no-op once exited
	if err == nil {
		s.cfg.Reaper.Release(g.rec.PID)
	}
	g.rec.Outcome = outcome
	g.rec.Exit = exit.String()
	if err != nil {
		g.rec.Exit = err.Error()
	}
	if g.exit.Type == control.Exit {
		g.rec.FdsAtExit = g.exit.Fds
		if g.exit.Err != "" && outcome != report.RolledBack {
			g.rec.Outcome = report.Failed
			g.rec.Exit += "; " + g.exit.Err
		}
	}
}

// note records what a message tells about g.
func (g *gen) note(m control.Message) {
	switch m.Type {
	case control.Received:
		g.rec.FdsAfterHandoff = m.Fds
	case control.Ready:
		g.rec.Serves = map[string]string{"http": m.HTTPAddr, "stream": m.StreamAddr, "udp": m.UDPAddr}
	case control.Exit:
		g.exit = m
	}
}

// KillAll ends every generation still running, on an abort.
func (s *Supervisor) KillAll() {
	for _, g := range s.gens {
		if alive(g) {
			s.kill(g, report.Failed)
		}
	}
	s.current = nil
}

// Generations are the records of every generation started, in order.
func (s *Supervisor) Generations() []report.Generation {
	out := make([]report.Generation, len(s.gens))
	for i, g := range s.gens {
		out[i] = g.rec
	}
	return out
}

// LinesWritten is, per line writer, the number of lines written by all
// generations, as the last generation to exit reported it; nil when none
// did.
func (s *Supervisor) LinesWritten() []uint64 {
	for i := len(s.gens) - 1; i >= 0; i-- {
		if s.gens[i].exit.Type == control.Exit {
			return s.gens[i].exit.LinesNext
		}
	}
	return nil
}

// ServedByServer is what every generation said it served, per load,
// added up.
func (s *Supervisor) ServedByServer() map[string]int64 {
	total := map[string]int64{}
	for _, g := range s.gens {
		for name, n := range g.exit.Served {
			total[name] += n
		}
	}
	return total
}

// Reaped counts the generations whose exit status was collected.
func (s *Supervisor) Reaped() int {
	n := 0
	for _, g := range s.gens {
		if !alive(g) {
			n++
		}
	}
	return n
}

func alive(g *gen) bool {
	_, exited := g.proc.Exit()
	return !exited
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}
