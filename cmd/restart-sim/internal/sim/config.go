//go:build linux

package sim

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/generation"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/load"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// Defaults: `restart-sim` with no flags runs for about a minute.
const (
	DefaultRestarts       = 200
	DefaultInterval       = 200 * time.Millisecond
	DefaultBaseline       = 10 * time.Second
	DefaultConcurrency    = 4
	DefaultRate           = 200
	DefaultReadyTimeout   = time.Second
	DefaultRequestTimeout = 3 * time.Second
	DefaultStepTimeout    = 5 * time.Second
	DefaultProgress       = 5 * time.Second
)

// Limits of the flags.
const (
	MinInterval    = 10 * time.Millisecond
	MinBaseline    = 100 * time.Millisecond
	MinTimeout     = 100 * time.Millisecond
	MaxConcurrency = 64
	MaxRate        = 100_000
	MaxRestarts    = 1_000_000
)

// hangMargin is how much longer than -ready-timeout a stream request may
// take with the hang fault: the old generation's wait for READY, plus its
// rollback.
const hangMargin = time.Second

// ErrUsage is returned, wrapped with the reason, for bad flags.
var ErrUsage = errors.New("restart-sim: bad usage")

// Config is one simulation's settings.
type Config struct {
	Restarts       int           // hand-offs to do in the restart phase
	Interval       time.Duration // from the start of one restart to the next
	Baseline       time.Duration // load without restarts, before the restart phase
	Concurrency    int           // clients per load
	Rate           float64       // requests a second per client; 0: as fast as answers come
	Loads          []string      // which loads run (load.Names)
	Faults         []string      // faults to inject, one restart attempt each (generation.Faults)
	ReadyTimeout   time.Duration // how long an old generation waits for READY
	RequestTimeout time.Duration // each request, frame and datagram
	StepTimeout    time.Duration // each hand-off and drain step
	JSON           string        // write the report as JSON here
	Chart          string        // draw the latency chart here (.svg, .png or .pdf)
	Verbose        bool          // a line per restart and per generation
	LatencyTarget  float64       // p99 during restarts over p99 in the baseline that meets the target
	FailOnLatency  bool          // a missed latency target fails the run
	Progress       time.Duration // a progress line this often on stderr; 0: none
	Defect         string        // build the demo service with this bug (generation.Defects): a self-test
	CrashSafety    bool          // the supervisor keeps the descriptors the service stores with it
	Spare          bool          // the supervisor keeps a spare generation waiting (supervisor.Config.Spare)

	// A service of the user's (the command after --) instead of the demo.
	Command    []string
	HTTPURL    string // GET this URL...
	HTTPStatus int    // ... and expect this status
	TCPAddr    string // a TCP echo service
	UDPAddr    string // a UDP echo service
	Handoff    string // its graceful hand-off socket, for the supervisor's crash recovery
}

// demo reports whether the run is of the built-in demo service.
func (c Config) demo() bool { return len(c.Command) == 0 }

// Faults lists every fault: those that break a new generation during its
// hand-off (demo only), and those that crash the serving one.
var Faults = append(slices.Clone(generation.Faults), report.FaultSigkill, report.FaultPanic)

// DefaultUserReadyTimeout is -ready-timeout for a service of the user's.
const DefaultUserReadyTimeout = 10 * time.Second

// DefaultConfig is what no flags mean.
func DefaultConfig() Config {
	return Config{
		Restarts: DefaultRestarts, Interval: DefaultInterval, Baseline: DefaultBaseline,
		Concurrency: DefaultConcurrency, Rate: DefaultRate, Loads: slices.Clone(load.Names), Faults: []string{},
		ReadyTimeout: DefaultReadyTimeout, RequestTimeout: DefaultRequestTimeout, StepTimeout: DefaultStepTimeout,
		LatencyTarget: report.DefaultLatencyTarget, Progress: DefaultProgress, CrashSafety: true,
		HTTPStatus: 200,
	}
}

const usageText = `Usage: restart-sim [flags]
       restart-sim [flags] -http URL|-tcp ADDR|-udp ADDR -- ./server args

Runs a service under the graceful supervisor, under load, and restarts it
again and again. Without a command, the service is a built-in demo: every
generation takes over all descriptors of the previous one through graceful
(TCP listener, established TCP streams with their state, UDP socket, shared
file), then the old one drains and exits. With a command after --, it is
your service: the loads are HTTP GETs to -http (with a status check) and
TCP and UDP echo at -tcp and -udp, all on loopback. Prints what was lost, failed or
duplicated, latency with and without restarts, hand-off times and open
descriptors per generation. Exit status: 0 pass, 1 fail, 2 bad usage,
3 interrupted (nothing failed in the part that ran). The latency target
(p99 during restarts within -latency-target of the baseline, per load) is
judged on a line of its own, MET or MISSED; MISSED fails the run only with
-fail-on-latency.

Flags:
`

// Parse reads the command line (without the program name). It returns an
// error wrapping ErrUsage for bad flags, and flag.ErrHelp for -h; it writes
// the usage to out in both cases.
func Parse(args []string, out io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("restart-sim", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageText)
		fs.PrintDefaults()
	}
	var duration time.Duration
	var loads, faults string
	fs.IntVar(&cfg.Restarts, "restarts", cfg.Restarts, "number of restarts in the restart phase")
	fs.DurationVar(&duration, "duration", 0, "length of the restart phase, instead of -restarts (restarts = duration / interval)")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "time from one restart to the next")
	fs.DurationVar(&cfg.Baseline, "baseline", cfg.Baseline, "load without restarts before the restart phase, for comparison")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "clients per load")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "requests a second per client (0: as fast as answers come)")
	fs.StringVar(&loads, "loads", strings.Join(cfg.Loads, ","), "loads to run, comma separated: "+strings.Join(load.Names, ", "))
	fs.StringVar(&faults, "faults", "", "faults to inject, comma separated, one restart attempt each: "+strings.Join(Faults, ", ")+
		" (crash, hang, kill break a new generation in its hand-off, demo only; sigkill, panic crash the serving one)")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", cfg.ReadyTimeout, "how long the old generation waits for the new one's READY")
	fs.DurationVar(&cfg.RequestTimeout, "timeout", cfg.RequestTimeout, "timeout of each request, frame and datagram")
	fs.StringVar(&cfg.JSON, "json", "", "write the report as JSON to this file (schema: REPORT.md)")
	fs.StringVar(&cfg.Chart, "chart", "", "draw latency over time with restart markers to this file (.svg, .png or .pdf)")
	fs.BoolVar(&cfg.Verbose, "verbose", false, "print a line per restart and per generation")
	fs.Float64Var(&cfg.LatencyTarget, "latency-target", cfg.LatencyTarget, "latency target: p99 during restarts at most this many times the baseline's, per load")
	fs.BoolVar(&cfg.FailOnLatency, "fail-on-latency", false, "fail the run when the latency target is missed (default: report it only)")
	fs.DurationVar(&cfg.Progress, "progress", cfg.Progress, "print a progress line this often on stderr (0: never)")
	fs.StringVar(&cfg.Defect, "defect", "", "self-test: build the demo service with one bug that the verdict must catch: "+strings.Join(generation.Defects, ", "))
	fs.BoolVar(&cfg.CrashSafety, "crash-safety", cfg.CrashSafety, "the supervisor keeps the descriptors the service stores with it (FDSTORE) for the generation it starts after a crash")
	fs.BoolVar(&cfg.Spare, "spare", false, "the supervisor keeps the next generation started in advance, waiting for a crash (graceful-supervisor -spare); for your service, needs -handoff")
	fs.StringVar(&cfg.HTTPURL, "http", "", "your service: GET this http:// URL on loopback")
	fs.IntVar(&cfg.HTTPStatus, "http-status", cfg.HTTPStatus, "your service: the status every -http answer must have")
	fs.StringVar(&cfg.TCPAddr, "tcp", "", "your service: a TCP echo address on loopback (a new connection per line)")
	fs.StringVar(&cfg.UDPAddr, "udp", "", "your service: a UDP echo address on loopback")
	fs.StringVar(&cfg.Handoff, "handoff", "", "your service: its graceful hand-off socket; after a crash the supervisor serves its store there (default: socket activation, LISTEN_FDS)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	fail := func(format string, a ...any) (Config, error) {
		err := fmt.Errorf("%w: "+format, append([]any{ErrUsage}, a...)...)
		fmt.Fprintln(out, err)
		fmt.Fprintln(out, "Run restart-sim -h for the flags.")
		return cfg, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if fs.NArg() > 0 {
		if i := len(args) - fs.NArg() - 1; i < 0 || args[i] != "--" {
			return fail("unexpected argument %q (a command goes after --)", fs.Arg(0))
		}
		cfg.Command = fs.Args()
	}
	if err := cfg.checkUser(set); err != nil {
		return fail("%v", err)
	}
	if cfg.Interval < MinInterval {
		return fail("-interval must be at least %v, got %v", MinInterval, cfg.Interval)
	}
	switch {
	case set["restarts"] && set["duration"]:
		return fail("-restarts and -duration both set: choose one")
	case set["duration"] && duration < cfg.Interval:
		return fail("-duration must be at least one -interval (%v), got %v", cfg.Interval, duration)
	case set["duration"]:
		cfg.Restarts = int(duration / cfg.Interval)
	}
	if cfg.Restarts < 0 || cfg.Restarts > MaxRestarts {
		return fail("-restarts must be between 0 and %d, got %d", MaxRestarts, cfg.Restarts)
	}
	if cfg.Baseline < MinBaseline {
		return fail("-baseline must be at least %v, got %v", MinBaseline, cfg.Baseline)
	}
	if cfg.Concurrency < 1 || cfg.Concurrency > MaxConcurrency {
		return fail("-concurrency must be between 1 and %d, got %d", MaxConcurrency, cfg.Concurrency)
	}
	if cfg.Rate < 0 || cfg.Rate > MaxRate {
		return fail("-rate must be between 0 and %d, got %g", MaxRate, cfg.Rate)
	}
	if cfg.ReadyTimeout < MinTimeout || cfg.RequestTimeout < MinTimeout {
		return fail("-ready-timeout and -timeout must be at least %v", MinTimeout)
	}
	var err error
	if cfg.Loads, err = list("-loads", loads, load.Names, false); err != nil {
		return fail("%v", err)
	}
	if len(cfg.Loads) == 0 {
		return fail("-loads names no load; choose among %s", strings.Join(load.Names, ", "))
	}
	if cfg.Faults, err = list("-faults", faults, Faults, true); err != nil {
		return fail("%v", err)
	}
	for _, f := range cfg.Faults {
		if !cfg.demo() && !report.IsCrash(f) {
			return fail("-faults %s: only the demo service can be told to fail its hand-off; for your service: %s, %s", f, report.FaultSigkill, report.FaultPanic)
		}
	}
	if !cfg.demo() {
		cfg.Loads = cfg.userLoads()
	}
	if len(cfg.Faults) > 0 && cfg.Restarts == 0 {
		return fail("-faults needs at least one restart")
	}
	if cfg.has(load.Stream) && slices.Contains(cfg.Faults, generation.FaultHang) &&
		cfg.RequestTimeout < cfg.ReadyTimeout+hangMargin {
		return fail("-timeout (%v) must be at least -ready-timeout (%v) + %v with the hang fault: "+
			"the streams wait, paused, until the old generation gives up on the hung one",
			cfg.RequestTimeout, cfg.ReadyTimeout, hangMargin)
	}
	if cfg.LatencyTarget < 1 {
		return fail("-latency-target must be at least 1, got %g", cfg.LatencyTarget)
	}
	if cfg.Progress < 0 {
		return fail("-progress must not be negative, got %v", cfg.Progress)
	}
	if cfg.Defect != "" && !slices.Contains(generation.Defects, cfg.Defect) {
		return fail("-defect: unknown %q; choose among %s", cfg.Defect, strings.Join(generation.Defects, ", "))
	}
	if cfg.Chart != "" && !report.ChartFormatOK(cfg.Chart) {
		return fail("-chart %q: the file name must end in .svg, .png or .pdf", cfg.Chart)
	}
	return cfg, nil
}

// checkUser checks the flags that go with a service of the user's, or
// must not go without one; set names the flags given.
func (c *Config) checkUser(set map[string]bool) error {
	if c.demo() {
		for _, name := range []string{"http", "http-status", "tcp", "udp", "handoff"} {
			if set[name] {
				return fmt.Errorf("-%s is for your service: name it after --", name)
			}
		}
		return nil
	}
	for _, name := range []string{"loads", "defect"} {
		if set[name] {
			return fmt.Errorf("-%s is for the demo service, not with a command", name)
		}
	}
	if c.HTTPURL == "" && c.TCPAddr == "" && c.UDPAddr == "" {
		return errors.New("with a command, name what to drive: -http URL, -tcp ADDR or -udp ADDR")
	}
	if c.HTTPURL != "" {
		if err := load.CheckURL(c.HTTPURL); err != nil {
			return fmt.Errorf("-http: %w", err)
		}
	}
	for _, t := range []struct{ flag, addr string }{{"-tcp", c.TCPAddr}, {"-udp", c.UDPAddr}} {
		if t.addr != "" {
			if err := load.CheckTarget(t.addr); err != nil {
				return fmt.Errorf("%s: %w", t.flag, err)
			}
		}
	}
	if !set["ready-timeout"] {
		c.ReadyTimeout = DefaultUserReadyTimeout
	}
	return nil
}

// userLoads names the loads that drive a service of the user's.
func (c Config) userLoads() []string {
	var loads []string
	if c.HTTPURL != "" {
		loads = append(loads, load.HTTP, load.KeepAlive)
	}
	if c.TCPAddr != "" {
		loads = append(loads, load.TCP)
	}
	if c.UDPAddr != "" {
		loads = append(loads, load.UDP)
	}
	return loads
}

// list splits a comma-separated flag value and checks every name.
func list(flagName, value string, known []string, repeats bool) ([]string, error) {
	out := []string{}
	for _, name := range strings.Split(value, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "":
			continue
		case !slices.Contains(known, name):
			return nil, fmt.Errorf("%s: unknown %q; choose among %s", flagName, name, strings.Join(known, ", "))
		case !repeats && slices.Contains(out, name):
			return nil, fmt.Errorf("%s: %q given twice", flagName, name)
		}
		out = append(out, name)
	}
	return out, nil
}

// has reports whether the load name is to run.
func (c Config) has(name string) bool { return slices.Contains(c.Loads, name) }

// reportConfig is the report's echo of c.
func (c Config) reportConfig() report.Config {
	return report.Config{
		Restarts: c.Restarts, IntervalMs: ms(c.Interval), BaselineMs: ms(c.Baseline),
		Concurrency: c.Concurrency, RatePerClient: c.Rate, RequestTimeoutMs: ms(c.RequestTimeout),
		ReadyTimeoutMs: ms(c.ReadyTimeout), Loads: c.Loads, Faults: c.Faults,
		LatencyTarget: c.LatencyTarget, FailOnLatency: c.FailOnLatency, Defect: c.Defect,
		Command: slices.Clone(c.Command), CrashSafety: c.CrashSafety, Spare: c.Spare,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
