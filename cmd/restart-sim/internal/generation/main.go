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

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/control"
)

// Command is the hidden first argument that makes restart-sim run as a
// generation of the demo service instead of as the simulation.
const Command = "__generation"

// PanicSignal makes a generation panic (the "panic" crash fault).
const PanicSignal = syscall.SIGUSR2

// Args returns the command line that runs a generation with cfg (after the
// program name).
func Args(cfg Config) []string {
	return []string{Command,
		"-handoff", cfg.Handoff, "-report", cfg.Report, "-fault-file", cfg.FaultFile,
		"-http", cfg.HTTPAddr, "-stream", cfg.StreamAddr, "-udp", cfg.UDPAddr, "-file", cfg.File,
		"-ready-timeout", cfg.ReadyTimeout.String(), "-timeout", cfg.Timeout.String(),
		"-line-writers", fmt.Sprint(cfg.LineWriters), "-line-rate", fmt.Sprint(cfg.LineRate),
		"-defect", cfg.Defect,
	}
}

// Main runs a generation from the arguments after Command and returns the
// exit code.
func Main(args []string) int {
	// Signals first: the supervisor may stop a generation at any time.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)
	panics := make(chan os.Signal, 1)
	signal.Notify(panics, PanicSignal)
	go func() {
		<-panics
		panic("restart-sim: fault panic: the serving generation panics")
	}()

	var cfg Config
	fs := flag.NewFlagSet(Command, flag.ContinueOnError)
	fs.StringVar(&cfg.Handoff, "handoff", "", "hand-off socket")
	fs.StringVar(&cfg.Report, "report", "", "restart-sim's report socket")
	fs.StringVar(&cfg.FaultFile, "fault-file", "", "file naming the fault of the next generation")
	fs.StringVar(&cfg.HTTPAddr, "http", "", "HTTP address of a first start")
	fs.StringVar(&cfg.StreamAddr, "stream", "", "stream address of a first start")
	fs.StringVar(&cfg.UDPAddr, "udp", "", "UDP address of a first start")
	fs.StringVar(&cfg.File, "file", "", "shared append-only file")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 2*time.Second, "wait for a successor's READY")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "each hand-off and drain step")
	fs.IntVar(&cfg.LineWriters, "line-writers", 0, "line writers")
	fs.Float64Var(&cfg.LineRate, "line-rate", 100, "lines a second per writer")
	fs.StringVar(&cfg.Defect, "defect", "", "bug to build the service with")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if cfg.Handoff == "" || cfg.Report == "" || cfg.File == "" || cfg.HTTPAddr == "" || cfg.StreamAddr == "" ||
		cfg.UDPAddr == "" || cfg.LineWriters < 0 || cfg.LineRate <= 0 ||
		(cfg.Defect != "" && !slices.Contains(Defects, cfg.Defect)) {
		fmt.Fprintf(os.Stderr, "restart-sim: demo service: bad arguments %q\n", args)
		return ExitUsage
	}
	ctl, err := control.Dial(cfg.Report)
	if err != nil {
		fmt.Fprintf(os.Stderr, "restart-sim: demo service: %v\n", err)
		return ExitUsage
	}
	defer ctl.Close()
	return Run(cfg, ctl, stop)
}
