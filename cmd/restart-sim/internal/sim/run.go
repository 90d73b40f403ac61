//go:build linux

package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/load"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/supervisor"
	"github.com/gracefulfd/graceful/harness"
)

// Exit codes of restart-sim.
const (
	ExitPass        = 0
	ExitFail        = 1
	ExitUsage       = 2
	ExitInterrupted = 3
)

// warmup is load before the baseline, left out of the latency figures.
const warmup = time.Second

// tail is load after the last restart, so that the last generation serves
// too before the run stops.
const tail = 500 * time.Millisecond

// Main runs restart-sim with the command line args (without the program
// name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	cfg, err := Parse(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return ExitPass
	case err != nil:
		return ExitUsage
	}
	ctx, stop := signalContext()
	defer stop()
	r, err := Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "restart-sim: %v\n", err)
		if r == nil {
			return ExitFail
		}
	}
	return Output(r, cfg, stdout, stderr)
}

// Output prints the report, writes the JSON and the chart asked for, and
// returns the exit code of the verdict.
func Output(r *Result, cfg Config, stdout, stderr io.Writer) int {
	code := r.Report.ExitCode()
	if err := r.Report.WriteText(stdout, cfg.Verbose); err != nil {
		fmt.Fprintf(stderr, "restart-sim: %v\n", err)
		code = ExitFail
	}
	if cfg.JSON != "" {
		if err := r.Report.SaveJSON(cfg.JSON); err != nil {
			fmt.Fprintf(stderr, "restart-sim: -json: %v\n", err)
			code = ExitFail
		} else {
			fmt.Fprintf(stdout, "report: %s\n", cfg.JSON)
		}
	}
	if cfg.Chart != "" {
		if err := report.SaveChart(cfg.Chart, r.Samples, r.Report); err != nil {
			fmt.Fprintf(stderr, "restart-sim: -chart: %v\n", err)
			code = ExitFail
		} else {
			fmt.Fprintf(stdout, "chart: %s\n", cfg.Chart)
		}
	}
	return code
}

// signalContext is cancelled by the first SIGTERM or SIGINT: the run then
// stops its loads, stops the current generation with SIGTERM (it drains
// and exits), and reports on what ran.
func signalContext() (context.Context, func()) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

// Result is a finished run: the report and every sample, for the chart.
type Result struct {
	Report  *report.Report
	Samples []report.Sample
}

// Run runs one simulation; cancelling ctx stops it early (the report says
// it was interrupted). Generations print their own errors to stderr. It
// returns an error, with no result, only when the simulation could not
// start; an error with a result says why it ended early.
func Run(ctx context.Context, cfg Config, stderr io.Writer) (*Result, error) {
	dir, err := os.MkdirTemp("", "gf")
	if err != nil {
		return nil, fmt.Errorf("make a private directory (TMPDIR=%q): %w", os.TempDir(), err)
	}
	defer os.RemoveAll(dir)
	reaper := supervisor.StartReaper()
	defer reaper.Stop()

	origin := time.Now()
	planned := warmup + cfg.Baseline + time.Duration(cfg.Restarts+len(cfg.Faults))*cfg.Interval + tail +
		time.Duration(len(cfg.Faults))*(cfg.ReadyTimeout+3*cfg.StepTimeout)
	sup, err := supervisor.New(supervisor.Config{
		Dir: dir, Origin: origin, Timeout: cfg.StepTimeout, ReadyTimeout: cfg.ReadyTimeout,
		LineWriters: lineWriters(cfg), LineRate: lineRate(cfg), Lifetime: planned + time.Minute,
		Stderr: stderr, Env: passEnv(), Reaper: reaper, Defect: cfg.Defect,
	})
	if err != nil {
		return nil, err
	}
	addrs, err := sup.Start()
	if err != nil {
		sup.KillAll()
		return nil, err
	}
	fdsStart, err := harness.CountFDs(os.Getpid())
	if err != nil {
		sup.KillAll()
		return nil, err
	}

	lcfg := load.Config{
		Start: origin, Clients: cfg.Concurrency, Rate: cfg.Rate, Timeout: cfg.RequestTimeout,
		MaxPerClient: maxPerClient(cfg.Rate, planned),
	}
	gens, err := generators(ctx, cfg, lcfg, addrs)
	if err != nil {
		sup.KillAll()
		return nil, err
	}
	loadCtx, stopLoads := context.WithTimeout(context.Background(), planned+time.Minute)
	defer stopLoads()
	var running sync.WaitGroup
	for _, g := range gens {
		running.Add(1)
		go func() {
			defer running.Done()
			g.Run(loadCtx)
		}()
	}

	prog := &progress{every: cfg.Progress, planned: cfg.Restarts + len(cfg.Faults), gens: gens, origin: origin, out: stderr}
	stopProgress := prog.start()
	defer stopProgress()

	ph := report.Phases{}
	since := func() float64 { return time.Since(origin).Seconds() }
	var attempts []report.Attempt
	var runErr error
	fmt.Fprintf(stderr, "restart-sim: generation 0 serves %s (http), %s (streams), %s (udp); loads: %s\n",
		addrs.HTTP, addrs.Stream, addrs.UDP, strings.Join(cfg.Loads, ", "))
	if pause(ctx, warmup) {
		fmt.Fprintf(stderr, "restart-sim: baseline phase: %v without restarts\n", cfg.Baseline)
		ph.BaselineStartS = since()
		pause(ctx, cfg.Baseline)
		ph.BaselineEndS = since()
	}
	if ctx.Err() == nil {
		fmt.Fprintf(stderr, "restart-sim: restart phase: %d restarts every %v, faults: %d\n",
			cfg.Restarts, cfg.Interval, len(cfg.Faults))
		ph.RestartStartS = since()
		attempts, runErr = restarts(ctx, cfg, sup, prog)
		ph.RestartEndS = since()
		if runErr == nil {
			pause(ctx, tail)
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "restart-sim: interrupted: stopping the loads, then the current generation")
	}

	stopProgress()
	stopLoads()
	running.Wait()
	fdsEnd := settledFds(fdsStart)
	if err := sup.Stop(); err != nil && runErr == nil {
		runErr = err
	}
	sup.KillAll()
	ph.EndS = since()

	res, err := build(cfg, sup, gens, attempts, ph)
	if err != nil {
		return nil, err
	}
	res.Report.FdAccounting(fdsStart, fdsEnd)
	res.Report.Supervisor = report.Supervisor{
		PID: os.Getpid(), GenerationsReaped: sup.Reaped(), OrphansReaped: reaper.Reaped(),
	}
	res.Report.Judge(ctx.Err() != nil)
	if runErr != nil {
		res.Report.Verdict.Pass = false
		res.Report.Verdict.Problems = append(res.Report.Verdict.Problems, runErr.Error())
	}
	return res, runErr
}

// restarts runs the restart phase: cfg.Restarts hand-offs, plus one attempt
// per injected fault spread evenly among them. Each attempt starts
// cfg.Interval after the previous one started, or at once when that one took
// longer (no catching up in bursts).
func restarts(ctx context.Context, cfg Config, sup *supervisor.Supervisor, prog *progress) ([]report.Attempt, error) {
	plan := schedule(cfg.Restarts, cfg.Faults)
	var attempts []report.Attempt
	next := time.Now()
	for i, fault := range plan {
		if !pause(ctx, time.Until(next)) {
			break
		}
		next = time.Now().Add(cfg.Interval)
		a, err := sup.Restart(i+1, fault)
		attempts = append(attempts, a)
		prog.attempted(a)
		if err != nil {
			return attempts, err
		}
	}
	return attempts, nil
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

// pause waits d, and reports false when ctx ended first.
func pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// settledFds counts this process's descriptors once the loads have
// stopped. Closing a connection in net/http finishes on another goroutine,
// so it waits, at most two seconds, for the count to come back to start.
func settledFds(start int) int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, err := harness.CountFDs(os.Getpid())
		if err != nil {
			return -1
		}
		if n <= start || time.Now().After(deadline) {
			return n
		}
		pause(context.Background(), 20*time.Millisecond)
	}
}

// generators makes the loads cfg asks for; the streams connect at once, so
// that they exist in generation 0.
func generators(ctx context.Context, cfg Config, lcfg load.Config, addrs supervisor.Addrs) ([]load.Generator, error) {
	var gens []load.Generator
	add := func(g load.Generator, err error) error {
		if err == nil {
			gens = append(gens, g)
		}
		return err
	}
	var err error
	for _, name := range load.Names {
		if !cfg.has(name) || err != nil {
			continue
		}
		switch name {
		case load.HTTP, load.KeepAlive:
			err = add(load.NewHTTP(lcfg, addrs.HTTP, name == load.KeepAlive))
		case load.Stream:
			var s *load.StreamLoad
			if s, err = load.NewStream(lcfg, addrs.Stream); err == nil {
				if err = s.Connect(ctx); err == nil {
					gens = append(gens, s)
				}
			}
		case load.UDP:
			err = add(load.NewUDP(lcfg, addrs.UDP))
		}
	}
	return gens, err
}

// build assembles the report from the loads, the shared file and the
// supervisor's records.
func build(cfg Config, sup *supervisor.Supervisor, gens []load.Generator, attempts []report.Attempt, ph report.Phases) (*Result, error) {
	r := &report.Report{Schema: report.SchemaID, Config: cfg.reportConfig(), Phases: ph}
	records := sup.Generations()
	byGen := map[int]*report.Generation{}
	for i := range records {
		byGen[records[i].Gen] = &records[i]
	}
	credit := func(name string, served map[int]int64) {
		for n, count := range served {
			if g := byGen[n]; g != nil {
				g.Served[name] = count
			}
		}
	}

	var all []report.Sample
	byServer := sup.ServedByServer()
	for _, g := range gens {
		samples := g.Samples()
		l := g.Result()
		l.Latency = report.PhaseLatency(samples, ph)
		if g.Name() == load.HTTP || g.Name() == load.KeepAlive {
			// A request the servers answered more often than the clients
			// saw it answered or failed was served twice.
			l.Duplicated += max(0, byServer[g.Name()]-l.OK-l.Failed)
		}
		r.Loads = append(r.Loads, l)
		credit(g.Name(), report.ServedBy(samples))
		all = append(all, samples...)
	}
	if cfg.has(load.File) {
		lines, err := load.CheckLines(sup.File(), sup.LineWriters(), sup.LinesWritten())
		if err != nil {
			return nil, err
		}
		r.Loads = append(r.Loads, lines.Load)
		credit(load.File, lines.Served)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].At < all[j].At })
	r.Latency = report.PhaseLatency(all, ph)
	r.Generations = records
	r.Restarts = restartSummary(cfg, attempts)
	return &Result{Report: r, Samples: all}, nil
}

func restartSummary(cfg Config, attempts []report.Attempt) report.Restarts {
	rs := report.Restarts{Requested: cfg.Restarts, Attempted: len(attempts), Attempts: attempts}
	var handoff, drain []float64
	for _, a := range attempts {
		if a.Fault != "" {
			rs.FaultsInjected++
		}
		if a.RolledBack {
			rs.RolledBack++
		}
		switch {
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
	return rs
}

// lineWriters is the number of line writers: one per client when the file
// load runs, none otherwise.
func lineWriters(cfg Config) int {
	if cfg.has(load.File) {
		return cfg.Concurrency
	}
	return 0
}

// lineRate is the lines a second of each line writer: the request rate of
// one client, or 200 when the other loads run flat out.
func lineRate(cfg Config) float64 {
	if cfg.Rate > 0 {
		return cfg.Rate
	}
	return 200
}

// maxPerClient bounds each client's requests: twice what the rate allows
// over the planned run, or the load package's default when unpaced.
func maxPerClient(rate float64, planned time.Duration) int64 {
	if rate <= 0 {
		return 0
	}
	return int64(2*rate*(planned+time.Minute).Seconds()) + 100
}

// passEnv is the environment generations get: nothing but the Go runtime's
// debugging knobs, so that no variable of this process leaks into them.
func passEnv() []string {
	var env []string
	for _, k := range []string{"GORACE", "GOTRACEBACK", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// progress prints a line on stderr every so often while the loads run: how
// far the restarts are, and how many requests were measured and failed.
type progress struct {
	every   time.Duration // 0: never
	planned int           // restart attempts planned
	gens    []load.Generator
	origin  time.Time
	out     io.Writer

	attempts, done, rolledBack atomic.Int64
}

// attempted counts a restart attempt.
func (p *progress) attempted(a report.Attempt) {
	p.attempts.Add(1)
	if a.OK {
		p.done.Add(1)
	}
	if a.RolledBack {
		p.rolledBack.Add(1)
	}
}

// start prints until the returned function is called; that function may be
// called more than once.
func (p *progress) start() (stop func()) {
	if p.every <= 0 {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(p.every)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				p.print()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-finished
	}
}

func (p *progress) print() {
	measured, failed := 0, 0
	for _, g := range p.gens {
		m, f := g.Progress()
		measured += m
		failed += f
	}
	fmt.Fprintf(p.out, "restart-sim: %3.0fs: restart %d of %d (%d done, %d rolled back); %d requests measured, %d failed\n",
		time.Since(p.origin).Seconds(), p.attempts.Load(), p.planned, p.done.Load(), p.rolledBack.Load(), measured, failed)
}
