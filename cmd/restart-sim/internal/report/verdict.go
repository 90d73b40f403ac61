package report

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Outcomes of a generation, as in [Generation.Outcome].
const (
	Retired    = "retired"
	Final      = "final"
	RolledBack = "rolled-back"
	Crashed    = "crashed"
	Failed     = "failed"
)

// Crash faults: the serving generation dies under load, and the
// supervisor must start the next one with the descriptors the service
// stored with it.
const (
	FaultSigkill = "sigkill" // SIGKILL to the serving generation
	FaultPanic   = "panic"   // the serving generation panics (SIGABRT to a program not ours)
)

// IsCrash tells a crash fault from the faults that break a new generation
// during its hand-off (which must be rolled back).
func IsCrash(fault string) bool { return fault == FaultSigkill || fault == FaultPanic }

// FdAccounting fills r.Fds from the generations and the supervisor's own
// counts. Descriptor counts are flat when every generation that received a
// set holds the same number of descriptors after the hand-off, every
// generation that drained holds the same number at exit, and the supervisor
// ends with no more than it started with. The first generation creates its
// descriptors instead of receiving them, so it is left out of the first
// comparison. A service other than the demo (Config.Command) holds
// connections of the loads among its descriptors: its generations' counts
// are reported but not compared.
func (r *Report) FdAccounting(supervisorStart, supervisorEnd int) {
	var afterHandoff, atExit []int
	for i, g := range r.Generations {
		if i > 0 && (g.Outcome == Retired || g.Outcome == Final) {
			afterHandoff = append(afterHandoff, g.FdsAfterHandoff)
		}
		if g.Outcome == Retired || g.Outcome == Final {
			atExit = append(atExit, g.FdsAtExit)
		}
	}
	if len(r.Config.Command) > 0 {
		r.Fds = Fds{SupervisorStart: supervisorStart, SupervisorEnd: supervisorEnd,
			AfterHandoff: RangeOf(afterHandoff), AtExit: RangeOf(atExit), Flat: supervisorEnd <= supervisorStart}
		return
	}
	r.Fds = Fds{
		SupervisorStart: supervisorStart,
		SupervisorEnd:   supervisorEnd,
		AfterHandoff:    RangeOf(afterHandoff),
		AtExit:          RangeOf(atExit),
	}
	r.Fds.Flat = r.Fds.AfterHandoff.Min == r.Fds.AfterHandoff.Max &&
		r.Fds.AtExit.Min == r.Fds.AtExit.Max &&
		notMissing(afterHandoff) && notMissing(atExit) &&
		supervisorEnd <= supervisorStart
}

func notMissing(counts []int) bool {
	for _, c := range counts {
		if c < 0 {
			return false
		}
	}
	return true
}

// Judge decides the verdict from everything else in the report: it fails on
// any failed, lost or duplicated request, datagram, frame or line; on an
// HTTP request sent twice because the server closed its reused keep-alive
// connection with the request in flight; on a generation that serves a
// listener or socket at another address than the first generation (it did not take
// that descriptor over); on a restart that failed without a fault being
// injected; on an injected fault that was not rolled back; on a generation
// that ended in a way nobody asked for; on a generation not reaped; on
// descriptor counts that are not flat; on fewer restarts than requested
// when the run was not interrupted; and, with Config.FailOnLatency, on a
// missed latency target. The latency target is judged in Verdict.Latency
// either way.
func (r *Report) Judge(interrupted bool) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	for _, l := range r.Loads {
		c := l.DuringCrashes
		if n := l.Failed - c.Failed; n > 0 {
			add("%s: %d failed (%s)", l.Name, n, causes(subtract(l.FailedBy, c.FailedBy)))
		}
		if n := l.Lost - c.Lost; n > 0 {
			add("%s: %d lost", l.Name, n)
		}
		if l.Duplicated > 0 {
			add("%s: %d duplicated", l.Name, l.Duplicated)
		}
		if n := l.Retried - c.Retried; n > 0 {
			add("%s: %d retried: the server closed a reused keep-alive connection with the request in flight "+
				"(net/http sent these GETs again; a POST would have failed)", l.Name, n)
		}
		if n := c.FailedBy[Refused.String()]; n > 0 && r.Config.CrashSafety {
			add("%s: %d refused while a crashed generation was being replaced: the listener or socket did not outlive it", l.Name, n)
		}
	}
	problems = append(problems, r.moved()...)
	rs := r.Restarts
	if rs.Failed > 0 {
		add("%d restarts failed without an injected fault", rs.Failed)
	}
	for _, a := range rs.Attempts {
		switch {
		case IsCrash(a.Fault) && !a.OK:
			add("restart %d: the service did not recover from fault %q (%s)", a.Index, a.Fault, a.Error)
		case a.Fault != "" && !IsCrash(a.Fault) && !a.RolledBack:
			add("restart %d: injected fault %q was not rolled back", a.Index, a.Fault)
		}
	}
	if !interrupted && rs.Done < rs.Requested {
		add("only %d of %d restarts done", rs.Done, rs.Requested)
	}
	for _, g := range r.Generations {
		if g.Outcome == Failed {
			add("generation %d failed (%s)", g.Gen, g.Exit)
		}
	}
	if n := len(r.Generations); r.Supervisor.GenerationsReaped != n {
		add("%d of %d generations reaped", r.Supervisor.GenerationsReaped, n)
	}
	if !r.Fds.Flat {
		add("descriptor counts not flat: after hand-off %d..%d, at exit %d..%d, supervisor %d -> %d",
			r.Fds.AfterHandoff.Min, r.Fds.AfterHandoff.Max, r.Fds.AtExit.Min, r.Fds.AtExit.Max,
			r.Fds.SupervisorStart, r.Fds.SupervisorEnd)
	}
	lat := r.judgeLatency()
	if !lat.Met && r.Config.FailOnLatency {
		add("latency target missed (-fail-on-latency): %s", r.missedText(lat))
	}
	if problems == nil {
		problems = []string{}
	}
	r.Verdict = Verdict{Pass: len(problems) == 0, Interrupted: interrupted, Problems: problems, Latency: lat}
}

// DefaultLatencyTarget is the latency target when Config.LatencyTarget is 0:
// p99 during restarts within 1.3x of the baseline's.
const DefaultLatencyTarget = 1.3

// judgeLatency compares each load's p99 during restarts with its baseline.
// Loads without samples in both phases are not judged.
func (r *Report) judgeLatency() LatencyVerdict {
	v := LatencyVerdict{Target: r.Config.LatencyTarget, Missed: []string{}}
	if v.Target <= 0 {
		v.Target = DefaultLatencyTarget
	}
	for _, l := range r.Loads {
		lc := l.Latency
		if lc.Baseline.Count > 0 && lc.Restarts.Count > 0 && lc.RatioP99 > v.Target {
			v.Missed = append(v.Missed, l.Name)
		}
	}
	v.Met = len(v.Missed) == 0
	return v
}

// missedText lists the loads over the latency target with their ratios.
func (r *Report) missedText(v LatencyVerdict) string {
	var parts []string
	for _, l := range r.Loads {
		if slices.Contains(v.Missed, l.Name) {
			parts = append(parts, fmt.Sprintf("%s p99 %.2fx", l.Name, l.Latency.RatioP99))
		}
	}
	return fmt.Sprintf("%s (target %.2gx of the baseline)", strings.Join(parts, ", "), v.Target)
}

// moved lists the generations that serve a listener or socket somewhere
// else than the first generation that said where it serves: they did not
// take that descriptor over.
func (r *Report) moved() []string {
	var problems []string
	first := map[string]string{}
	for _, g := range r.Generations {
		for _, name := range slices.Sorted(maps.Keys(g.Serves)) {
			addr := g.Serves[name]
			switch want, ok := first[name]; {
			case !ok:
				first[name] = addr
			case addr != want:
				problems = append(problems, fmt.Sprintf("%s: generation %d serves at %s, not at %s: it did not take the %s descriptor over",
					loadOf(name), g.Gen, addr, want, name))
			}
		}
	}
	return problems
}

// loadOf names the load that uses the listener or socket name, for the
// problems that name a load first.
func loadOf(name string) string {
	if name == "http" {
		return "http/keepalive"
	}
	return name
}

// ExitCode is the process exit status for the verdict: 0 pass, 1 fail, 3
// interrupted without any failure (a verdict on part of a run only).
func (r *Report) ExitCode() int {
	switch {
	case !r.Verdict.Pass:
		return 1
	case r.Verdict.Interrupted:
		return 3
	}
	return 0
}

// subtract returns the counts of a less those of b.
func subtract(a, b map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range a {
		if v -= b[k]; v > 0 {
			out[k] = v
		}
	}
	return out
}

func causes(failedBy map[string]int64) string {
	var parts []string
	for cause, n := range failedBy {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", cause, n))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
