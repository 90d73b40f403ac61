//go:build linux

package sim

import (
	"sort"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/control"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/load"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/service"
	"github.com/gracefulfd/graceful/supervisor"
)

// build assembles the report from the loads, the shared file, the
// supervisor's record of the generations and the demo's reports.
func (r *runner) build(gens []load.Generator, ph report.Phases, exit supervisor.Exit) (*Result, error) {
	rep := &report.Report{Schema: report.SchemaID, Config: r.cfg.reportConfig(), Phases: ph}
	records, byPID := r.generations(exit)
	credit := func(name string, served map[int]int64) {
		for pid, count := range served {
			if g := byPID[pid]; g != nil {
				g.Served[name] += count
			}
		}
	}

	var all []report.Sample
	byServer := r.servedByServer()
	for _, g := range gens {
		samples := g.Samples()
		l := g.Result()
		l.Latency = report.PhaseLatency(samples, ph)
		l.DuringCrashes = r.duringCrashes(samples, g)
		if r.demo != nil && (g.Name() == load.HTTP || g.Name() == load.KeepAlive) {
			// A request the servers answered more often than the clients
			// saw it answered or failed was served twice.
			l.Duplicated += max(0, byServer[g.Name()]-l.OK-l.Failed)
		}
		rep.Loads = append(rep.Loads, l)
		credit(g.Name(), report.ServedBy(samples))
		all = append(all, samples...)
	}
	if r.demo != nil && r.cfg.has(load.File) {
		lines, err := load.CheckLines(r.demo.File, r.demo.LineWriters, r.linesWritten())
		if err != nil {
			return nil, err
		}
		rep.Loads = append(rep.Loads, lines.Load)
		credit(load.File, lines.Served)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].At < all[j].At })
	rep.Latency = report.PhaseLatency(all, ph)
	rep.Generations = records
	rep.Restarts = restartSummary(r.cfg, r.attempts)
	return &Result{Report: rep, Samples: all}, nil
}

// generations makes the report's record of every generation the
// supervisor started, and indexes them by process id (the demo's answers
// name their generation by it).
func (r *runner) generations(exit supervisor.Exit) ([]report.Generation, map[int]*report.Generation) {
	gs := r.svc.Generations()
	records := make([]report.Generation, len(gs))
	for i, g := range gs {
		rec := report.Generation{
			Gen: g.N, PID: g.PID, Fault: r.faultOf[g.N], Exit: g.Exit, FdsAfterHandoff: -1, FdsAtExit: -1,
			Served: map[string]int64{}, Serves: map[string]string{},
		}
		switch {
		case rec.Exit == "":
			rec.Exit = g.Failed
		case g.Failed != "":
			rec.Exit += "; " + g.Failed
		}
		if n, ok := r.fdsAtReady[g.N]; ok {
			rec.FdsAfterHandoff = n
		}
		exited := r.demoReports(g, &rec)
		rec.Outcome = outcome(g, rec.Fault, exited, exit)
		records[i] = rec
	}
	byPID := map[int]*report.Generation{}
	for i := range records {
		byPID[records[i].PID] = &records[i]
	}
	return records, byPID
}

// demoReports fills rec from what a generation of the demo reported, and
// says whether it reported its clean exit (always true for a service of
// the user's, which does not report).
func (r *runner) demoReports(g service.Gen, rec *report.Generation) bool {
	if r.sink == nil {
		return true
	}
	if m, ok := r.sink.Last(g.PID, control.Received); ok {
		rec.FdsAfterHandoff = m.Fds
	}
	if m, ok := r.sink.Last(g.PID, control.Ready); ok {
		rec.Serves = map[string]string{"http": m.HTTPAddr, "stream": m.StreamAddr, "udp": m.UDPAddr}
	}
	// A generation that exited cleanly sent its report before it exited:
	// it is in the socket, if not read yet.
	wait := time.Duration(0)
	if g.OK {
		wait = time.Second
	}
	m, ok := r.sink.Await(g.PID, control.Exit, wait)
	if ok {
		rec.FdsAtExit = m.Fds
		if m.Err != "" {
			rec.Exit += "; " + m.Err
			return false
		}
	}
	return ok
}

// outcome says how generation g ended: fault is what was injected into
// it, reported whether it reported a clean exit, exit how the one serving
// at the stop ended.
func outcome(g service.Gen, fault string, reported bool, exit supervisor.Exit) string {
	switch {
	case report.IsCrash(fault) && g.Died:
		return report.Crashed
	case fault != "" && g.Ready.IsZero():
		return report.RolledBack
	case !g.OK || !reported:
		return report.Failed
	case g.State == "retiring":
		return report.Retired
	case g.N == exit.Gen && !g.Died:
		return report.Final
	}
	return report.Failed
}

// duringCrashes counts what went wrong with g's samples while a crashed
// generation was being replaced: a sample counts when the span from its
// sending to its end meets such a window.
func (r *runner) duringCrashes(samples []report.Sample, g load.Generator) report.Trouble {
	t := report.Trouble{FailedBy: map[string]int64{}}
	in := func(from, to time.Duration) bool {
		for _, w := range r.windows {
			if from <= w.to && to >= w.from {
				return true
			}
		}
		return false
	}
	for _, s := range samples {
		if !in(s.At, s.At+s.Latency) {
			continue
		}
		if s.Outcome != report.OK {
			t.Failed++
			t.FailedBy[s.Outcome.String()]++
		}
		if s.Retried {
			t.Retried++
		}
	}
	if u, ok := g.(interface{ LostAt() []time.Duration }); ok {
		timeout := r.cfg.RequestTimeout
		for _, at := range u.LostAt() {
			if in(at, at+timeout) {
				t.Lost++
			}
		}
	}
	return t
}

// servedByServer is what every generation of the demo said it served, per
// load, added up.
func (r *runner) servedByServer() map[string]int64 {
	total := map[string]int64{}
	if r.sink == nil {
		return total
	}
	for _, g := range r.svc.Generations() {
		if m, ok := r.sink.Last(g.PID, control.Exit); ok {
			for name, n := range m.Served {
				total[name] += n
			}
		}
	}
	return total
}

// linesWritten is, per line writer, the number of lines written by all
// generations, as the last generation of the demo to exit cleanly
// reported it; nil when none did.
func (r *runner) linesWritten() []uint64 {
	gs := r.svc.Generations()
	for i := len(gs) - 1; i >= 0; i-- {
		if m, ok := r.sink.Last(gs[i].PID, control.Exit); ok {
			return m.LinesNext
		}
	}
	return nil
}

func restartSummary(cfg Config, attempts []report.Attempt) report.Restarts {
	rs := report.Restarts{Requested: cfg.Restarts, Attempted: len(attempts), Attempts: attempts}
	var handoff, drain, recovery []float64
	for _, a := range attempts {
		if a.Fault != "" {
			rs.FaultsInjected++
		}
		if a.RolledBack {
			rs.RolledBack++
		}
		switch {
		case report.IsCrash(a.Fault):
			rs.Crashes++
			if a.OK {
				rs.Recovered++
				recovery = append(recovery, a.RecoveryMs)
			}
		case a.OK:
			rs.Done++
			handoff = append(handoff, a.HandoffMs)
			drain = append(drain, a.DrainMs)
		case a.Fault == "":
			rs.Failed++
		}
	}
	if rs.Attempts == nil {
		rs.Attempts = []report.Attempt{}
	}
	rs.HandoffMs = report.SummarizeMs(handoff)
	rs.DrainMs = report.SummarizeMs(drain)
	rs.RecoveryMs = report.SummarizeMs(recovery)
	return rs
}
