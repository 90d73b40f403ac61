package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	r.normalize()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// normalize makes every nil list and map empty, as the schema wants them.
func (r *Report) normalize() {
	orEmpty := func(l *[]string) {
		if *l == nil {
			*l = []string{}
		}
	}
	counts := func(m *map[string]int64) {
		if *m == nil {
			*m = map[string]int64{}
		}
	}
	orEmpty(&r.Config.Command)
	orEmpty(&r.Config.Loads)
	orEmpty(&r.Config.Faults)
	orEmpty(&r.Verdict.Problems)
	orEmpty(&r.Verdict.Latency.Missed)
	if r.Restarts.Attempts == nil {
		r.Restarts.Attempts = []Attempt{}
	}
	if r.Loads == nil {
		r.Loads = []Load{}
	}
	for i := range r.Loads {
		counts(&r.Loads[i].FailedBy)
		counts(&r.Loads[i].DuringCrashes.FailedBy)
	}
	if r.Generations == nil {
		r.Generations = []Generation{}
	}
	for i := range r.Generations {
		counts(&r.Generations[i].Served)
		if r.Generations[i].Serves == nil {
			r.Generations[i].Serves = map[string]string{}
		}
	}
}

// SaveJSON writes the report as JSON to the file at path.
func (r *Report) SaveJSON(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteText renders the report for a person at a terminal. verbose adds a
// line per restart attempt and per generation.
func (r *Report) WriteText(w io.Writer, verbose bool) error {
	p := &printer{w: w}
	c := r.Config
	p.printf("restart-sim: %d restarts every %s, %d clients per load at %s/s each, baseline %s\n",
		c.Restarts, msDuration(c.IntervalMs), c.Concurrency, rate(c.RatePerClient), msDuration(c.BaselineMs))
	p.printf("loads: %s; faults: %s\n\n", strings.Join(c.Loads, ", "), orNone(c.Faults))

	r.writeRestarts(p, verbose)
	r.writeLoads(p)
	r.writeLatency(p)
	r.writeGenerations(p, verbose)
	r.writeFds(p)
	r.writeVerdict(p)
	return p.err
}

func (r *Report) writeRestarts(p *printer, verbose bool) {
	rs := r.Restarts
	p.printf("RESTARTS  %d done, %d failed, %d faults injected, %d rolled back\n",
		rs.Done, rs.Failed, rs.FaultsInjected, rs.RolledBack)
	p.printf("          hand-off %s (process start to READY); drain %s (READY to old process gone)\n",
		summary(rs.HandoffMs), summary(rs.DrainMs))
	if rs.Crashes > 0 {
		safety := "on"
		if !r.Config.CrashSafety {
			safety = "OFF"
		}
		if r.Config.Spare {
			safety += ", with a spare"
		}
		p.printf("          crashes %d, recovered %d, crash safety %s: recovery %s (death to the next generation serving)\n",
			rs.Crashes, rs.Recovered, safety, summary(rs.RecoveryMs))
	}
	if verbose {
		tw := p.table()
		fmt.Fprintln(tw, "  #\tgen\tfrom\tat s\tfault\tresult\thand-off ms\tsession ms\tdrain ms\trecovery ms\terror")
		for _, a := range rs.Attempts {
			result := "ok"
			switch {
			case a.RolledBack:
				result = "rolled back"
			case !a.OK:
				result = "FAILED"
			}
			fmt.Fprintf(tw, "  %d\t%d\t%d\t%.2f\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%s\n", a.Index, a.Gen, a.From, a.AtS,
				dash(a.Fault), result, a.HandoffMs, a.SessionMs, a.DrainMs, a.RecoveryMs, dash(a.Error))
		}
		p.flush(tw)
	}
	for _, a := range rs.Attempts {
		if IsCrash(a.Fault) {
			if !a.OK {
				p.printf("          restart %d (fault %s): NOT recovered (%s)\n", a.Index, a.Fault, dash(a.Error))
			}
			continue
		}
		if a.Fault != "" || !a.OK {
			what := "rolled back: the old generation kept serving"
			if !a.RolledBack {
				what = "NOT rolled back"
			}
			p.printf("          restart %d (gen %d, fault %s): %s (%s)\n", a.Index, a.Gen, dash(a.Fault), what, dash(a.Error))
		}
	}
	p.printf("\n")
}

func (r *Report) writeLoads(p *printer) {
	tw := p.table()
	fmt.Fprintln(tw, "LOAD\tsent\tok\tfailed\tlost\tdup\tretried\tfailed by")
	for _, l := range r.Loads {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", l.Name, l.Sent, l.OK, l.Failed, l.Lost, l.Duplicated,
			l.Retried, dash(causes(l.FailedBy)))
	}
	p.flush(tw)
	if r.Restarts.Crashes > 0 {
		var parts []string
		for _, l := range r.Loads {
			if l.Name == "file" {
				continue // the lines are written by the service: nothing to refuse
			}
			c := l.DuringCrashes
			part := fmt.Sprintf("%s %d refused", l.Name, c.FailedBy[Refused.String()])
			if others := c.Failed - c.FailedBy[Refused.String()]; others > 0 {
				part += fmt.Sprintf(", %d failed otherwise", others)
			}
			if c.Lost > 0 {
				part += fmt.Sprintf(", %d lost", c.Lost)
			}
			if c.Retried > 0 {
				part += fmt.Sprintf(", %d retried", c.Retried)
			}
			parts = append(parts, part)
		}
		p.printf("during crashes (counted above; only refused ones fail, with crash safety on): %s\n", strings.Join(parts, "; "))
	}
	p.printf("\n")
}

func (r *Report) writeLatency(p *printer) {
	tw := p.table()
	fmt.Fprintln(tw, "LATENCY ms\tbaseline p50 / p99 / max\trestarts p50 / p99 / max\tratio p50 / p99 / max")
	row := func(name string, lc LatencyCompare) {
		b, s := lc.Baseline, lc.Restarts
		fmt.Fprintf(tw, "%s\t%s / %s / %s\t%s / %s / %s\t%.2fx / %.2fx / %.2fx\n", name,
			num(b.P50Ms), num(b.P99Ms), num(b.MaxMs), num(s.P50Ms), num(s.P99Ms), num(s.MaxMs),
			lc.RatioP50, lc.RatioP99, lc.RatioMax)
	}
	for _, l := range r.Loads {
		if l.Latency.Baseline.Count+l.Latency.Restarts.Count > 0 {
			row(l.Name, l.Latency)
		}
	}
	row("all", r.Latency)
	p.flush(tw)
	p.printf("(successful requests only; target: p99 during restarts within %.2gx of the baseline)\n\n", r.Verdict.Latency.Target)
}

func (r *Report) writeGenerations(p *printer, verbose bool) {
	served := map[string][]int64{}
	idle := 0
	for _, g := range r.Generations {
		total := int64(0)
		for name, n := range g.Served {
			served[name] = append(served[name], n)
			total += n
		}
		if total == 0 && g.Outcome != RolledBack {
			idle++
		}
	}
	var parts []string
	for _, l := range r.Loads {
		counts := served[l.Name]
		if len(counts) == 0 {
			continue
		}
		slices.Sort(counts)
		parts = append(parts, fmt.Sprintf("%s %d/%d/%d", l.Name, counts[0], counts[len(counts)/2], counts[len(counts)-1]))
	}
	if len(r.Config.Command) > 0 {
		p.printf("GENERATIONS %d started (which one answered is known of the demo service only)\n", len(r.Generations))
	} else {
		p.printf("GENERATIONS %d started, %d that took over served nothing\n", len(r.Generations), idle)
	}
	if len(parts) > 0 {
		p.printf("          served per generation (min/median/max): %s\n", strings.Join(parts, ", "))
	}
	if verbose {
		tw := p.table()
		fmt.Fprintln(tw, "  gen\tpid\tfault\toutcome\texit\tfds after hand-off\tfds at exit\tserved")
		for _, g := range r.Generations {
			fmt.Fprintf(tw, "  %d\t%d\t%s\t%s\t%s\t%d\t%d\t%s\n", g.Gen, g.PID, dash(g.Fault), g.Outcome, dash(g.Exit),
				g.FdsAfterHandoff, g.FdsAtExit, servedText(g.Served))
		}
		p.flush(tw)
	}
	p.printf("\n")
}

func (r *Report) writeFds(p *printer) {
	f := r.Fds
	state := "flat"
	if !f.Flat {
		state = "NOT FLAT"
	}
	p.printf("FDS       after hand-off %s, at exit %s, supervisor %d -> %d: %s\n",
		rangeText(f.AfterHandoff), rangeText(f.AtExit), f.SupervisorStart, f.SupervisorEnd, state)
	p.printf("          supervisor pid %d reaped %d of %d generations and %d orphans\n\n",
		r.Supervisor.PID, r.Supervisor.GenerationsReaped, len(r.Generations), r.Supervisor.OrphansReaped)
}

func (r *Report) writeVerdict(p *printer) {
	v := r.Verdict
	lat := v.Latency
	switch {
	case lat.Met:
		p.printf("LATENCY MET: p99 during restarts within %.2gx of the baseline for every load\n", lat.Target)
	case r.Config.FailOnLatency:
		p.printf("LATENCY MISSED: %s; -fail-on-latency makes this fail the run\n", r.missedText(lat))
	default:
		p.printf("LATENCY MISSED: %s; reported, does not fail the run (-fail-on-latency would)\n", r.missedText(lat))
	}
	switch {
	case !v.Pass:
		p.printf("FAIL\n")
		for _, problem := range v.Problems {
			p.printf("  - %s\n", problem)
		}
	case v.Interrupted:
		p.printf("INTERRUPTED: nothing lost or failed in the %d restarts done before the stop\n", r.Restarts.Done)
	default:
		p.printf("PASS: nothing lost, failed or duplicated across %d restarts\n", r.Restarts.Done)
	}
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func (p *printer) table() *tabwriter.Writer {
	return tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
}

func (p *printer) flush(tw *tabwriter.Writer) {
	if err := tw.Flush(); err != nil && p.err == nil {
		p.err = err
	}
}

func summary(s Summary) string {
	if s.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %sms p99 %sms max %sms", num(s.P50Ms), num(s.P99Ms), num(s.MaxMs))
}

func rangeText(r Range) string {
	switch {
	case r.Min < 0:
		return "-"
	case r.Min == r.Max:
		return fmt.Sprintf("%d in every generation", r.Min)
	}
	return fmt.Sprintf("%d..%d", r.Min, r.Max)
}

func servedText(served map[string]int64) string {
	var parts []string
	for name, n := range served {
		parts = append(parts, fmt.Sprintf("%s=%d", name, n))
	}
	slices.Sort(parts)
	return dash(strings.Join(parts, " "))
}

func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func msDuration(v float64) string {
	return time.Duration(v * float64(time.Millisecond)).String()
}

func rate(perSecond float64) string {
	if perSecond <= 0 {
		return "max"
	}
	return fmt.Sprintf("%g", perSecond)
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
