package report

import (
	"fmt"
	"sort"
	"strings"
)

// Outcomes of a generation, as in [Generation.Outcome].
const (
	Retired    = "retired"
	Final      = "final"
	RolledBack = "rolled-back"
	Failed     = "failed"
)

// FdAccounting fills r.Fds from the generations and the supervisor's own
// counts. Descriptor counts are flat when every generation that received a
// set holds the same number of descriptors after the hand-off, every
// generation that drained holds the same number at exit, and the supervisor
// ends with no more than it started with. Generation 0 creates its
// descriptors instead of receiving them, so it is left out of the first
// comparison.
func (r *Report) FdAccounting(supervisorStart, supervisorEnd int) {
	var afterHandoff, atExit []int
	for _, g := range r.Generations {
		if g.Gen > 0 && (g.Outcome == Retired || g.Outcome == Final) {
			afterHandoff = append(afterHandoff, g.FdsAfterHandoff)
		}
		if g.Outcome == Retired || g.Outcome == Final {
			atExit = append(atExit, g.FdsAtExit)
		}
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
// any failed, lost or duplicated request, datagram, frame or line; on a
// restart that failed without a fault being injected; on an injected fault
// that was not rolled back; on a generation that ended in a way nobody asked
// for; on a generation not reaped; on descriptor counts that are not flat;
// and on fewer restarts than
// requested when the run was not interrupted.
func (r *Report) Judge(interrupted bool) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	for _, l := range r.Loads {
		if l.Failed > 0 {
			add("%s: %d failed (%s)", l.Name, l.Failed, causes(l.FailedBy))
		}
		if l.Lost > 0 {
			add("%s: %d lost", l.Name, l.Lost)
		}
		if l.Duplicated > 0 {
			add("%s: %d duplicated", l.Name, l.Duplicated)
		}
	}
	rs := r.Restarts
	if rs.Failed > 0 {
		add("%d restarts failed without an injected fault", rs.Failed)
	}
	for _, a := range rs.Attempts {
		if a.Fault != "" && !a.RolledBack {
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
	if problems == nil {
		problems = []string{}
	}
	r.Verdict = Verdict{Pass: len(problems) == 0, Interrupted: interrupted, Problems: problems}
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
