//go:build linux

package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/control"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/generation"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/load"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/service"
	"github.com/gracefulfd/graceful/harness"
)

// Exit codes of restart-sim.
const (
	ExitPass        = 0
	ExitFail        = 1
	ExitUsage       = 2
	ExitInterrupted = 3
)

// warmup is load before the baseline, left out of the latency figures:
// a second, or the baseline's length when that is shorter (a short run
// is a test).
func warmup(cfg Config) time.Duration { return min(time.Second, cfg.Baseline) }

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
// stops its loads, stops the service (the supervisor sends SIGTERM to the
// serving generation, which drains and exits), and reports on what ran.
func signalContext() (context.Context, func()) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

// Result is a finished run: the report and every sample, for the chart.
type Result struct {
	Report  *report.Report
	Samples []report.Sample
}

// Run runs one simulation; cancelling ctx stops it early (the report says
// it was interrupted). It returns an error, with no result, only when the
// simulation could not start; an error with a result says why it ended
// early.
func Run(ctx context.Context, cfg Config, stderr io.Writer) (*Result, error) {
	dir, err := os.MkdirTemp("", "gf")
	if err != nil {
		return nil, fmt.Errorf("make a private directory (TMPDIR=%q): %w", os.TempDir(), err)
	}
	defer os.RemoveAll(dir)

	origin := time.Now()
	planned := warmup(cfg) + cfg.Baseline + time.Duration(cfg.Restarts+len(cfg.Faults))*cfg.Interval + tail +
		time.Duration(len(cfg.Faults))*(cfg.ReadyTimeout+3*cfg.StepTimeout)
	r := &runner{cfg: cfg, origin: origin, out: stderr, faultOf: map[int]string{}, fdsAtReady: map[int]int{}}
	svcCfg := service.Config{
		Dir: filepath.Join(dir, "supervisor"), ReadyTimeout: cfg.ReadyTimeout, StopTimeout: 2 * cfg.StepTimeout,
		CrashSafety: cfg.CrashSafety, Spare: cfg.Spare, Output: stderr, Log: stderr, Verbose: cfg.Verbose,
	}
	var tg targets
	if cfg.demo() {
		if r.sink, err = control.Listen(filepath.Join(dir, "report.sock")); err != nil {
			return nil, err
		}
		defer r.sink.Close()
		if r.demo, err = demoConfig(cfg, dir); err != nil {
			return nil, err
		}
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find this executable: %w", err)
		}
		svcCfg.Path, svcCfg.Args, svcCfg.Env, svcCfg.Handoff = exe, generation.Args(*r.demo), passEnv(), r.demo.Handoff
		tg = targets{http: r.demo.HTTPAddr, stream: r.demo.StreamAddr, udp: r.demo.UDPAddr}
	} else {
		svcCfg.Path, svcCfg.Args, svcCfg.Handoff = cfg.Command[0], cfg.Command[1:], cfg.Handoff
		tg = targets{url: cfg.HTTPURL, tcp: cfg.TCPAddr, udp: cfg.UDPAddr}
	}

	if r.svc, err = service.Start(svcCfg); err != nil {
		return nil, fmt.Errorf("start %s: %w", svcCfg.Path, err)
	}
	if g, ok := r.svc.Serving(); ok {
		r.readyFds(g)
	}
	r.svc.AwaitStandby(2 * time.Second) // it is there at the end too
	fdsStart, err := harness.CountFDs(os.Getpid())
	if err != nil {
		r.svc.Stop()
		return nil, err
	}

	lcfg := load.Config{
		Start: origin, Clients: cfg.Concurrency, Rate: cfg.Rate, Timeout: cfg.RequestTimeout,
		MaxPerClient: maxPerClient(cfg.Rate, planned),
	}
	gens, err := generators(ctx, cfg, lcfg, tg)
	if err != nil {
		r.svc.Stop()
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
	var runErr error
	fmt.Fprintf(stderr, "restart-sim: %s serves %s; loads: %s\n", what(cfg), tg, strings.Join(names(gens, cfg), ", "))
	if pause(ctx, warmup(cfg)) {
		fmt.Fprintf(stderr, "restart-sim: baseline phase: %v without restarts\n", cfg.Baseline)
		ph.BaselineStartS = since()
		pause(ctx, cfg.Baseline)
		ph.BaselineEndS = since()
	}
	if ctx.Err() == nil {
		fmt.Fprintf(stderr, "restart-sim: restart phase: %d restarts every %v, faults: %d\n",
			cfg.Restarts, cfg.Interval, len(cfg.Faults))
		ph.RestartStartS = since()
		runErr = r.restarts(ctx, prog)
		ph.RestartEndS = since()
		if runErr == nil {
			pause(ctx, tail)
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "restart-sim: interrupted: stopping the loads, then the service")
	}

	stopProgress()
	stopLoads()
	running.Wait()
	fdsEnd := settledFds(fdsStart)
	exit, err := r.svc.Stop()
	if err != nil && runErr == nil {
		runErr = err
	}
	ph.EndS = since()

	res, err := r.build(gens, ph, exit)
	if err != nil {
		return nil, err
	}
	res.Report.FdAccounting(fdsStart, fdsEnd)
	gs := r.svc.Generations()
	res.Report.Supervisor = report.Supervisor{PID: os.Getpid(), GenerationsReaped: len(gs), OrphansReaped: r.svc.Orphans()}
	res.Report.Judge(ctx.Err() != nil)
	if runErr != nil {
		res.Report.Verdict.Pass = false
		res.Report.Verdict.Problems = append(res.Report.Verdict.Problems, runErr.Error())
	}
	return res, runErr
}

// targets are the addresses the loads drive.
type targets struct {
	http, stream, udp string // the demo's
	url, tcp          string // a service of the user's (and udp)
}

func (t targets) String() string {
	var parts []string
	for _, p := range []struct{ name, addr string }{
		{"http", t.http}, {"stream", t.stream}, {"http", t.url}, {"tcp", t.tcp}, {"udp", t.udp},
	} {
		if p.addr != "" {
			parts = append(parts, p.addr+" ("+p.name+")")
		}
	}
	return strings.Join(parts, ", ")
}

func what(cfg Config) string {
	if cfg.demo() {
		return "the demo service"
	}
	return strings.Join(cfg.Command, " ")
}

func names(gens []load.Generator, cfg Config) []string {
	var out []string
	for _, g := range gens {
		out = append(out, g.Name())
	}
	if cfg.demo() && cfg.has(load.File) {
		out = append(out, load.File)
	}
	return out
}

// demoConfig is the command line of every generation of the demo service:
// its sockets and files in dir, and the addresses of a first start, picked
// free now.
func demoConfig(cfg Config, dir string) (*generation.Config, error) {
	httpAddr, err := freeAddr("tcp")
	if err != nil {
		return nil, err
	}
	streamAddr, err := freeAddr("tcp")
	if err != nil {
		return nil, err
	}
	udpAddr, err := freeAddr("udp")
	if err != nil {
		return nil, err
	}
	return &generation.Config{
		Handoff: filepath.Join(dir, "handoff.sock"), Report: filepath.Join(dir, "report.sock"),
		FaultFile: filepath.Join(dir, "fault"), File: filepath.Join(dir, "lines.log"),
		HTTPAddr: httpAddr, StreamAddr: streamAddr, UDPAddr: udpAddr,
		ReadyTimeout: cfg.ReadyTimeout, Timeout: cfg.StepTimeout,
		LineWriters: lineWriters(cfg), LineRate: lineRate(cfg), Defect: cfg.Defect,
	}, nil
}

// freeAddr returns a loopback address with a port the kernel has just
// given out (and taken back): the demo's first generation binds it.
func freeAddr(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	ln, err := net.Listen(network, "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
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

// generators makes the loads: the demo's (cfg.Loads), or those of a
// service of the user's; the streams connect at once, so that they exist
// in the first generation.
func generators(ctx context.Context, cfg Config, lcfg load.Config, t targets) ([]load.Generator, error) {
	var gens []load.Generator
	add := func(g load.Generator, err error) error {
		if err == nil {
			gens = append(gens, g)
		}
		return err
	}
	if !cfg.demo() {
		var err error
		if t.url != "" {
			err = errors.Join(add(load.NewHTTPURL(lcfg, t.url, false, cfg.HTTPStatus)),
				add(load.NewHTTPURL(lcfg, t.url, true, cfg.HTTPStatus)))
		}
		if t.tcp != "" && err == nil {
			err = add(load.NewTCPEcho(lcfg, t.tcp))
		}
		if t.udp != "" && err == nil {
			err = add(load.NewUDPEcho(lcfg, t.udp))
		}
		return gens, err
	}
	var err error
	for _, name := range load.Names {
		if !cfg.has(name) || err != nil {
			continue
		}
		switch name {
		case load.HTTP, load.KeepAlive:
			err = add(load.NewHTTP(lcfg, t.http, name == load.KeepAlive))
		case load.Stream:
			var s *load.StreamLoad
			if s, err = load.NewStream(lcfg, t.stream); err == nil {
				if err = s.Connect(ctx); err == nil {
					gens = append(gens, s)
				}
			}
		case load.UDP:
			err = add(load.NewUDP(lcfg, t.udp))
		}
	}
	return gens, err
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

// passEnv is the environment the demo's generations get: nothing but the
// Go runtime's debugging knobs, so that no variable of this process leaks
// into them (the supervisor adds NOTIFY_SOCKET).
func passEnv() []string {
	env := []string{}
	for _, k := range []string{"GORACE", "GOTRACEBACK", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
