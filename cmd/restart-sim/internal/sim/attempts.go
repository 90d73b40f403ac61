//go:build linux

package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/control"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/generation"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/service"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/supervisor"
)

// ErrNoGeneration: no generation serves any more, the run cannot go on.
var ErrNoGeneration = errors.New("restart-sim: no generation is serving")

// runner makes the restart attempts of one run and keeps what they did.
type runner struct {
	cfg    Config
	origin time.Time
	out    io.Writer // progress and verbose lines
	svc    *service.Service
	sink   *control.Sink      // the demo's reports; nil for a service of the user's
	demo   *generation.Config // the demo's settings; nil for a service of the user's

	attempts   []report.Attempt
	faultOf    map[int]string // generation: the fault injected into it
	windows    []window       // while a crashed generation was being replaced
	fdsAtReady map[int]int    // a service of the user's: descriptors of each generation once ready
}

// window is a span of the run, as durations since its start.
type window struct{ from, to time.Duration }

// restarts runs the restart phase: cfg.Restarts restarts, plus one attempt
// per injected fault spread evenly among them. Each attempt starts
// cfg.Interval after the previous one started, or at once when that one
// took longer (no catching up in bursts).
func (r *runner) restarts(ctx context.Context, prog *progress) error {
	plan := schedule(r.cfg.Restarts, r.cfg.Faults)
	next := time.Now()
	for i, fault := range plan {
		if !pause(ctx, time.Until(next)) {
			break
		}
		next = time.Now().Add(r.cfg.Interval)
		a, err := r.attempt(i+1, fault)
		r.attempts = append(r.attempts, a)
		prog.attempted(a)
		if r.cfg.Verbose {
			fmt.Fprintf(r.out, "restart-sim: restart %d (fault %q): gen %d -> %d ok=%v rolled back=%v %s\n",
				a.Index, a.Fault, a.From, a.Gen, a.OK, a.RolledBack, a.Error)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// outcomeWait bounds the wait for the outcome of one attempt.
func (r *runner) outcomeWait() time.Duration { return r.cfg.ReadyTimeout + 3*r.cfg.StepTimeout }

// attempt makes restart attempt index with fault ("" for none). The error
// is not nil only when no generation serves any more.
func (r *runner) attempt(index int, fault string) (report.Attempt, error) {
	old, ok := r.svc.Serving()
	a := report.Attempt{Index: index, From: old.N, Fault: fault, AtS: time.Since(r.origin).Seconds()}
	if !ok {
		a.Error = ErrNoGeneration.Error()
		return a, ErrNoGeneration
	}
	if report.IsCrash(fault) {
		r.crash(&a, old)
	} else {
		r.restart(&a, old)
	}
	if _, ok := r.svc.Serving(); !ok {
		return a, fmt.Errorf("%w after restart %d", ErrNoGeneration, index)
	}
	return a, nil
}

// restart replaces the serving generation old through the supervisor; a
// fault makes the new generation fail, and the supervisor must roll back.
func (r *runner) restart(a *report.Attempt, old service.Gen) {
	newest := r.newest()
	if a.Fault != "" {
		if err := os.WriteFile(r.demo.FaultFile, []byte(a.Fault), 0o600); err != nil {
			a.Error = err.Error()
			return
		}
		defer os.Remove(r.demo.FaultFile) // in case no generation read it
	}
	if a.Fault == generation.FaultKill {
		go r.killWhenReceiving(newest)
	}
	g, err := r.svc.Restart(r.outcomeWait())
	if err == nil {
		a.Gen, a.HandoffMs = g.N, ms(g.Ready.Sub(g.Started))
		r.faultOf[g.N] = a.Fault
		r.readyFds(g)
		if m, ok := r.report(g.PID, control.Ready, 0); ok {
			a.SessionMs = m.SessionMs
		}
		gone, exited := r.svc.AwaitExit(old.N, 2*r.cfg.StepTimeout+time.Second)
		a.DrainMs = ms(gone.Exited.Sub(g.Ready))
		reported := r.demo == nil // the demo reports its clean exit
		if !reported {
			_, reported = r.report(old.PID, control.Exit, time.Second)
		}
		a.OK = a.Fault == "" && exited && gone.OK && reported
		switch {
		case a.Fault != "":
			a.Error = "the faulty generation took over"
		case !a.OK:
			a.Error = fmt.Sprintf("generation %d did not drain cleanly: %s", old.N, gone.Exit)
		}
		return
	}
	a.Error = err.Error()
	if started, ok := r.svc.Starting(newest, time.Second); ok {
		a.Gen = started.N
		r.faultOf[started.N] = a.Fault
	}
	serving, ok := r.svc.Serving()
	a.RolledBack = errors.Is(err, supervisor.ErrRestartFailed) && ok && serving.N == old.N
	if r.demo != nil && a.RolledBack {
		// The old generation must have seen the hand-off fail, and gone on.
		m, ok := r.report(old.PID, control.Handoff, r.cfg.ReadyTimeout+r.cfg.StepTimeout)
		a.RolledBack = ok && !m.OK
		if ok && m.Err != "" {
			a.Error += "; the old generation: " + m.Err
		}
	}
}

// killWhenReceiving kills the generation started after newest once it says
// it is receiving the set (the "kill" fault: killed mid-hand-off).
func (r *runner) killWhenReceiving(newest int) {
	g, ok := r.svc.Starting(newest, r.outcomeWait())
	if !ok {
		return
	}
	if _, ok := r.sink.Await(g.PID, control.Receiving, r.outcomeWait()); ok {
		syscall.Kill(g.PID, syscall.SIGKILL)
	}
}

// crash kills the serving generation old, and waits for the supervisor to
// start the next one and for it to serve: the recovery time is from old's
// death to then.
func (r *runner) crash(a *report.Attempt, old service.Gen) {
	sig := syscall.SIGKILL
	if a.Fault == report.FaultPanic {
		sig = syscall.SIGABRT
		if r.demo != nil {
			sig = generation.PanicSignal
		}
	}
	r.faultOf[old.N] = a.Fault
	d := r.cfg.ReadyTimeout + 2*r.cfg.StepTimeout
	victim, next, at, err := r.svc.Crash(sig, syscall.Kill, d)
	from := at.Sub(r.origin)
	if err != nil {
		a.Error = err.Error()
		r.windows = append(r.windows, window{from, from + d})
		return
	}
	a.Gen, a.OK = next.N, true
	a.HandoffMs = ms(next.Ready.Sub(next.Started))
	a.RecoveryMs = ms(next.Ready.Sub(victim.Exited))
	r.windows = append(r.windows, r.crashWindow(from, next.Ready.Sub(r.origin)))
	r.readyFds(next)
}

// crashWindow is the time a crash at from shows in, its successor ready at
// ready: until then, and for two of a client's request intervals (10 ms
// at least) after. A connection the crashed generation held (a stream, an
// HTTP keep-alive connection) fails when its client next uses it, and a
// successor that takes over within a millisecond or two (a spare) is
// ready before that.
func (r *runner) crashWindow(from, ready time.Duration) window {
	grace := 10 * time.Millisecond
	if r.cfg.Rate > 0 {
		grace = max(grace, time.Duration(2*float64(time.Second)/r.cfg.Rate))
	}
	return window{from, ready + grace}
}

// newest is the number of the newest generation started.
func (r *runner) newest() int {
	gs := r.svc.Generations()
	if len(gs) == 0 {
		return 0
	}
	return gs[len(gs)-1].N
}

// report returns the demo's report of type typ from process pid, waiting
// for it at most d.
func (r *runner) report(pid int, typ string, d time.Duration) (control.Message, bool) {
	if r.sink == nil {
		return control.Message{}, false
	}
	return r.sink.Await(pid, typ, d)
}

// readyFds counts, for a service of the user's, the descriptors of a
// generation that has just become ready (the demo reports its own).
func (r *runner) readyFds(g service.Gen) {
	if r.demo != nil {
		return
	}
	if n, err := harness.CountFDs(g.PID); err == nil {
		r.fdsAtReady[g.N] = n
	}
}

// schedule places the faults evenly among the restarts: the result has one
// entry per attempt, "" for a plain restart. Fault i of n goes at position
// (i+1)*total/(n+1), so that none comes first when a restart can.
func schedule(restarts int, faults []string) []string {
	total := restarts + len(faults)
	plan := make([]string, total)
	for i, f := range faults {
		plan[(i+1)*total/(len(faults)+1)] = f
	}
	return plan
}
