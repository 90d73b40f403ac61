//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/supervisor"
)

// Exit codes of the commands.
const (
	exitOK       = 0
	exitFailed   = 1 // the restart failed, or the supervisor could not run
	exitUsage    = 2 // bad flags, or the supervisor could not be asked
	exitRefused  = 3 // the restart was refused
	exitNotFound = 2
)

const usage = `usage:
  graceful-supervisor [flags] -- program [args]   run program as successive generations
  graceful-supervisor restart [-dir DIR] [-timeout D]
  graceful-supervisor status [-dir DIR] [-json]

Run "graceful-supervisor -h", "graceful-supervisor restart -h" for the flags.
`

// dispatch runs the subcommand args name and returns the exit code.
func dispatch(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "restart":
			return restartCmd(args[1:], os.Stdout, os.Stderr)
		case "status":
			return statusCmd(args[1:], os.Stdout, os.Stderr)
		case "run":
			args = args[1:]
		case "help":
			fmt.Fprint(os.Stdout, usage)
			return exitOK
		}
	}
	return runCmd(args, os.Stdout, os.Stderr)
}

// defaultDir is where the supervisor and its clients meet when -dir is not
// given: under systemd's RuntimeDirectory, the user's runtime directory,
// or a directory of this user's in /tmp.
func defaultDir() string {
	if d, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); d != "" {
		return filepath.Join(d, "graceful-supervisor")
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "graceful-supervisor")
	}
	return filepath.Join(os.TempDir(), "graceful-supervisor-"+strconv.Itoa(os.Geteuid()))
}

func runCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("graceful-supervisor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage+"\nflags of run:\n")
		fs.PrintDefaults()
	}
	var cfg supervisor.Config
	dir := fs.String("dir", defaultDir(), "runtime `directory` (0700) for the control and notify sockets")
	fs.StringVar(&cfg.Handoff, "handoff", "", "the service's graceful hand-off socket `path`: after a crash, stored descriptors are served there instead of passed as LISTEN_FDS")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", supervisor.DefaultReadyTimeout, "how long a new generation may take to say READY=1")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", supervisor.DefaultStopTimeout, "how long a generation may take to exit after SIGTERM")
	fs.DurationVar(&cfg.MinBackoff, "backoff-min", supervisor.DefaultMinBackoff, "wait before the second restart of a crash loop")
	fs.DurationVar(&cfg.MaxBackoff, "backoff-max", supervisor.DefaultMaxBackoff, "longest wait between restarts of a crash loop")
	fs.IntVar(&cfg.FdStoreMax, "fdstore-max", supervisor.DefaultFdStoreMax, "descriptors the store keeps (negative: no store)")
	fs.BoolVar(&cfg.Spare, "spare", false, "keep the next generation started in advance, waiting in graceful.Receive, so that a crash is recovered without starting a process (needs -handoff)")
	verbose := fs.Bool("v", false, "log debug messages")
	quiet := fs.Bool("q", false, "log warnings and errors only")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, "graceful-supervisor: no program to run\n\n"+usage)
		return exitUsage
	}
	cfg.Path, cfg.Args = fs.Arg(0), fs.Args()[1:]
	cfg.Dir = *dir
	cfg.ReapOrphans = true
	cfg.Upstream = os.Getenv("NOTIFY_SOCKET") != ""
	cfg.Stdout, cfg.Stderr = &lineWriter{w: stdout}, &lineWriter{w: stderr}
	level := slog.LevelInfo
	switch {
	case *verbose:
		level = slog.LevelDebug
	case *quiet:
		level = slog.LevelWarn
	}
	cfg.Logger = slog.New(slog.NewTextHandler(&prefixWriter{prefix: "[supervisor] ", w: cfg.Stderr}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	log := cfg.Logger

	// Signals first: from here on, none is lost.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	// Descriptors this supervisor got by socket activation start its store.
	err := graceful.ReceiveActivation(func(fd int, meta io.Reader) error {
		m, err := graceful.MetaFrom(meta)
		cfg.Store = append(cfg.Store, os.NewFile(uintptr(fd), m["name"]))
		return err
	})
	if err != nil && !errors.Is(err, graceful.ErrNotActivated) {
		log.Warn("socket activation", "err", err)
	}
	s, err := supervisor.New(cfg)
	for _, f := range cfg.Store {
		f.Close() // the supervisor keeps its own duplicates
	}
	if err != nil {
		fmt.Fprintf(stderr, "graceful-supervisor: %v\n", err)
		return exitFailed
	}

	var restarts sync.WaitGroup
	done := make(chan struct{})
	defer func() { close(done); restarts.Wait() }()
	go func() {
		for {
			var sig os.Signal
			select {
			case sig = <-sigs:
			case <-done:
				return
			}
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT:
				s.Stop(sig.(syscall.Signal))
			case syscall.SIGHUP:
				restarts.Add(1)
				go func() {
					defer restarts.Done()
					if _, err := s.Restart(context.Background()); err != nil {
						log.Error("restart on SIGHUP", "err", err)
					}
				}()
			default:
				s.Signal(sig.(syscall.Signal))
			}
		}
	}()

	exit, err := s.Run(context.Background())
	if err != nil {
		fmt.Fprintf(stderr, "graceful-supervisor: %v\n", err)
		return exitFailed
	}
	log.Info("exiting", "gen", exit.Gen, "exit", exit.String())
	return exit.ExitCode()
}

func restartCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("graceful-supervisor restart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", defaultDir(), "the supervisor's runtime `directory`")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the outcome")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	g, err := supervisor.RequestRestart(ctx, *dir)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "generation %d (pid %d) took over\n", g.N, g.PID)
		return exitOK
	case errors.Is(err, supervisor.ErrRestartFailed):
		fmt.Fprintf(stderr, "graceful-supervisor: %v\n", err)
		return exitFailed
	case errors.Is(err, supervisor.ErrNotServing), errors.Is(err, supervisor.ErrStopping):
		fmt.Fprintf(stderr, "graceful-supervisor: restart refused: %v\n", err)
		return exitRefused
	}
	fmt.Fprintf(stderr, "graceful-supervisor: %v\n", err)
	return exitNotFound
}

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("graceful-supervisor status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", defaultDir(), "the supervisor's runtime `directory`")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := supervisor.RequestStatus(ctx, *dir)
	if err != nil {
		fmt.Fprintf(stderr, "graceful-supervisor: %v\n", err)
		return exitNotFound
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return exitOK
	}
	gen := func(what string, g *supervisor.Generation) {
		if g == nil {
			return
		}
		fmt.Fprintf(stdout, "%s: generation %d, pid %d", what, g.N, g.PID)
		if g.MainPID != g.PID {
			fmt.Fprintf(stdout, " (main pid %d)", g.MainPID)
		}
		if g.Status != "" {
			fmt.Fprintf(stdout, ": %s", g.Status)
		}
		fmt.Fprintln(stdout)
	}
	if st.Serving == nil {
		fmt.Fprintln(stdout, "serving: none")
	}
	gen("serving", st.Serving)
	gen("starting", st.Starting)
	for i := range st.Retiring {
		gen("retiring", &st.Retiring[i])
	}
	if st.Spare != nil {
		state := "starting"
		if st.SpareWaiting {
			state = "waiting for its turn"
		}
		fmt.Fprintf(stdout, "spare: generation %d, pid %d, %s\n", st.Spare.N, st.Spare.PID, state)
	}
	fmt.Fprintf(stdout, "stored: %d descriptors %v\n", len(st.Stored), st.Stored)
	fmt.Fprintf(stdout, "restarts: %d took over, %d failed; crashes: %d; orphans reaped: %d\n",
		st.Restarts, st.Failed, st.Crashes, st.Orphans)
	return exitOK
}

// lineWriter serialises whole writes on w: the supervisor writes whole
// lines, and so does its logger.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter starts every line written with prefix.
type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) > 0 {
			out.WriteString(p.prefix)
			out.Write(line)
		}
	}
	if _, err := p.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(b), nil
}
