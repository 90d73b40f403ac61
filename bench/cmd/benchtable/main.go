// Command benchtable runs the graceful library's benchmarks and those of
// bench/ in interleaved rounds (every benchmark once per round, so that
// drift on a noisy machine hits every implementation alike), feeds the
// output through benchstat and writes a markdown report with the ratios of
// each implementation to its reference measured in the same run.
//
// Run it from bench/:
//
//	go run ./cmd/benchtable                 # writes RESULTS.md and results.txt
//	go run ./cmd/benchtable -quick -out /tmp/r.md -raw /tmp/r.txt   # a smoke run
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// config is what the flags set.
type config struct {
	count     int
	benchtime string
	convert   string
	restarts  int
	out, raw  string
	quick     bool
	from      string
	baseline  string
	superTime string
}

// baseName matches the graceful rows of the baseline's output.
var baseName = regexp.MustCompile(`/impl=graceful(-\d+\s)`)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(args []string, log io.Writer) error {
	fs := flag.NewFlagSet("benchtable", flag.ContinueOnError)
	cfg := config{}
	fs.IntVar(&cfg.count, "count", 6, "rounds: every benchmark runs once per round")
	fs.StringVar(&cfg.benchtime, "benchtime", "1s", "-test.benchtime of the transfer and hand-off benchmarks")
	fs.StringVar(&cfg.convert, "convert-benchtime", "20x", "-test.benchtime of the conversion benchmark")
	fs.IntVar(&cfg.restarts, "restarts", 20, "restarts per under-load run")
	fs.StringVar(&cfg.out, "out", "RESULTS.md", "markdown report to write")
	fs.StringVar(&cfg.raw, "raw", "results.txt", "raw benchmark output to write (benchstat's input)")
	fs.BoolVar(&cfg.quick, "quick", false, "a smoke run: 1 round, few iterations, 3 restarts")
	fs.StringVar(&cfg.from, "from", "", "write the report from this raw output instead of running the benchmarks")
	fs.StringVar(&cfg.baseline, "baseline", "", "a checkout of an earlier commit of this repository: its library's graceful rows (transfers and hand-off) run in the same rounds, as impl=graceful-base")
	fs.StringVar(&cfg.superTime, "supervisor-benchtime", "20x", "-test.benchtime of the supervisor benchmark")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.quick {
		cfg.count, cfg.benchtime, cfg.convert, cfg.restarts, cfg.superTime = 1, "20x", "2x", 3, "2x"
	}
	if err := checkDir(); err != nil {
		return err
	}
	if cfg.from != "" {
		raw, err := os.ReadFile(cfg.from)
		if err != nil {
			return err
		}
		cfg.raw = cfg.from
		measured := time.Now()
		if st, err := os.Stat(cfg.from); err == nil {
			measured = st.ModTime()
		}
		return write(cfg, nil, raw, measured, 0, log)
	}
	tmp, err := os.MkdirTemp("", "benchtable")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	libTest, benchTest := filepath.Join(tmp, "graceful.test"), filepath.Join(tmp, "bench.test")
	fmt.Fprintln(log, "building the test binaries")
	if err := goCmd("..", "test", "-c", "-o", libTest, "./graceful"); err != nil {
		return err
	}
	if err := goCmd(".", "test", "-c", "-o", benchTest, "."); err != nil {
		return err
	}

	type benchRun struct {
		bin, dir string
		args     []string
		base     bool // the baseline's binary: its graceful rows are renamed graceful-base
	}
	runs := []benchRun{
		{libTest, "../graceful", []string{"-test.bench", "^BenchmarkTransfer$", "-test.benchtime", cfg.benchtime}, false},
		{benchTest, ".", []string{"-test.bench", "^(BenchmarkTransfer|BenchmarkHandoff|BenchmarkHandoffPaired)$", "-test.benchtime", cfg.benchtime}, false},
		{benchTest, ".", []string{"-test.bench", "^BenchmarkConvert$", "-test.benchtime", cfg.convert}, false},
		{benchTest, ".", []string{"-test.bench", "^BenchmarkSupervisorPaired$", "-test.benchtime", cfg.superTime}, false},
		{benchTest, ".", []string{"-test.bench", "^BenchmarkUnderLoad$", "-test.benchtime", "1x",
			"-underload.restarts", strconv.Itoa(cfg.restarts)}, false},
	}
	if cfg.baseline != "" {
		baseLib, baseBench := filepath.Join(tmp, "graceful-base.test"), filepath.Join(tmp, "bench-base.test")
		fmt.Fprintln(log, "building the baseline's test binaries in", cfg.baseline)
		if err := goCmd(cfg.baseline, "test", "-c", "-o", baseLib, "./graceful"); err != nil {
			return err
		}
		if err := goCmd(filepath.Join(cfg.baseline, "bench"), "test", "-c", "-o", baseBench, "."); err != nil {
			return err
		}
		runs = append(runs,
			benchRun{baseLib, filepath.Join(cfg.baseline, "graceful"), []string{"-test.bench", "^BenchmarkTransfer$/^proc=2$/./^fds=1000$/^impl=graceful$", "-test.benchtime", cfg.benchtime}, true},
			benchRun{baseBench, filepath.Join(cfg.baseline, "bench"), []string{"-test.bench", "^BenchmarkHandoff$/^impl=graceful$", "-test.benchtime", cfg.benchtime}, true})
	}
	var raw bytes.Buffer
	started := time.Now()
	for round := 1; round <= cfg.count; round++ {
		for _, r := range runs {
			fmt.Fprintf(log, "round %d/%d: %s %s\n", round, cfg.count, filepath.Base(r.bin), strings.Join(r.args, " "))
			args := append([]string{"-test.run", "^$", "-test.count", "1", "-test.benchmem"}, r.args...)
			cmd := exec.Command(r.bin, args...)
			cmd.Dir = r.dir
			cmd.Stderr = log
			out, err := cmd.Output()
			if r.base {
				out = baseName.ReplaceAll(out, []byte("/impl=graceful-base$1"))
			}
			raw.Write(out)
			if err != nil {
				os.WriteFile(cfg.raw, raw.Bytes(), 0o644)
				return fmt.Errorf("%s %s: %w (output so far in %s)", r.bin, strings.Join(args, " "), err, cfg.raw)
			}
		}
	}
	elapsed := time.Since(started)
	if err := os.WriteFile(cfg.raw, raw.Bytes(), 0o644); err != nil {
		return err
	}

	return write(cfg, args, raw.Bytes(), started, elapsed, log)
}

// write renders the report of raw benchmark output.
func write(cfg config, args []string, raw []byte, started time.Time, elapsed time.Duration, log io.Writer) error {
	results, err := parse(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	var md bytes.Buffer
	report(&md, results, reportInfo{
		command: commandLine(args),
		machine: machine(),
		date:    started.UTC().Format("2006-01-02 15:04 MST"),
		elapsed: elapsed.Round(time.Second),
		rounds:  results.rounds(),
		cfg:     cfg,
		stat: func(filter string) string {
			out, err := benchstat(cfg.raw, filter)
			if err != nil {
				return err.Error() + "\n"
			}
			return out
		},
		raw: cfg.raw,
	})
	if err := os.WriteFile(cfg.out, md.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "wrote %s and %s\n", cfg.out, cfg.raw)
	return nil
}

// checkDir makes sure we run in bench/, beside the library's module.
func checkDir() error {
	mod, err := os.ReadFile("go.mod")
	if err == nil && bytes.Contains(mod, []byte("module github.com/gracefulfd/graceful/bench\n")) {
		if _, err := os.Stat("../graceful"); err == nil {
			return nil
		}
	}
	return errors.New("run me from the bench/ directory of the graceful repository")
}

func goCmd(dir string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s (in %s): %w", strings.Join(args, " "), dir, err)
	}
	return nil
}

// benchstat runs benchstat, a tool of this module (go.mod pins it), on the
// results of the raw output that filter selects, with one column per
// implementation.
func benchstat(raw, filter string) (string, error) {
	cmd := exec.Command("go", "tool", "benchstat", "-col", "/impl", "-filter", filter, raw)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("benchstat: %w", err)
	}
	return string(out), nil
}

func commandLine(args []string) string {
	s := "cd bench && go run ./cmd/benchtable"
	if len(args) > 0 {
		s += " " + strings.Join(args, " ")
	}
	return s
}

// machine describes where the benchmarks ran.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s/%s, %d CPUs (%s), Linux %s, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpu, kernel, runtime.Version())
}
