//go:build linux

package generation

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/harness"
)

// Command is the hidden first argument that makes restart-sim run as a
// generation of the demo service instead of as the supervisor.
const Command = "__generation"

// Args returns the command line that starts a generation with cfg (after
// the program name).
func Args(cfg Config) []string {
	return []string{Command,
		"-gen", fmt.Sprint(cfg.Gen), "-from", cfg.From, "-at", cfg.At, "-file", cfg.File,
		"-fault", cfg.Fault, "-ready-timeout", cfg.ReadyTimeout.String(), "-timeout", cfg.Timeout.String(),
		"-line-writers", fmt.Sprint(cfg.LineWriters), "-line-rate", fmt.Sprint(cfg.LineRate),
		"-defect", cfg.Defect,
	}
}

// Main runs a generation from the arguments after Command, with the
// control channel the supervisor gave it, and returns the exit code.
func Main(args []string) int {
	var cfg Config
	fs := flag.NewFlagSet(Command, flag.ContinueOnError)
	fs.IntVar(&cfg.Gen, "gen", 0, "generation number")
	fs.StringVar(&cfg.From, "from", "", "hand-off socket to take over from")
	fs.StringVar(&cfg.At, "at", "", "hand-off socket to offer the set on")
	fs.StringVar(&cfg.File, "file", "", "shared append-only file")
	fs.StringVar(&cfg.Fault, "fault", "", "fault mode")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 2*time.Second, "wait for a successor's READY")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "each hand-off and drain step")
	fs.IntVar(&cfg.LineWriters, "line-writers", 0, "line writers")
	fs.Float64Var(&cfg.LineRate, "line-rate", 100, "lines a second per writer")
	fs.StringVar(&cfg.Defect, "defect", "", "bug to build the service with")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if cfg.At == "" || cfg.File == "" || cfg.LineWriters < 0 || cfg.LineRate <= 0 ||
		(cfg.Fault != "" && !slices.Contains(Faults, cfg.Fault)) ||
		(cfg.Defect != "" && !slices.Contains(Defects, cfg.Defect)) {
		fmt.Fprintf(os.Stderr, "restart-sim: generation: bad arguments %q\n", args)
		return ExitUsage
	}
	ctl, err := harness.ChildControl()
	if err != nil {
		fmt.Fprintf(os.Stderr, "restart-sim: generation %d: %v\n", cfg.Gen, err)
		return ExitUsage
	}
	defer ctl.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)
	return Run(cfg, ctl, stop)
}
