// Command graceful-conformance tests an implementation of the graceful
// descriptor hand-off protocol (spec/protocol.md) through its adapter
// (spec/adapter.md), and grades every requirement.
//
//	graceful-conformance --adapter 'python3 conformance/python/adapter.py'
//
// Exit status 0 means: no check of a required requirement (every MUST;
// every SHOULD too with --strict) failed; every required requirement that
// has checks the adapter can reach was checked, or was skipped only where
// --allow-skip or --expected-failures says it may be (a check the machine
// cannot run, such as one that needs root, otherwise fails the run); and no
// expected failure passed. Requirements the adapter cannot reach (it does
// not offer the feature their checks need) are reported UNTESTED and do not
// fail the run. 1 means the implementation failed; 2 a usage error.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/onsi/ginkgo/v2"

	"github.com/gracefulfd/graceful/conformance"
	"github.com/gracefulfd/graceful/conformance/internal/refadapter"
)

// referenceCommand is the argument that makes this binary the Go
// reference adapter, for --reference builtin.
const referenceCommand = "reference-adapter"

func main() {
	if len(os.Args) == 2 && os.Args[1] == referenceCommand {
		os.Exit(refadapter.Main())
	}
	os.Exit(run())
}

func run() int {
	var (
		adapter   = flag.String("adapter", "", "the adapter command and its arguments, split on spaces (no shell)")
		strict    = flag.Bool("strict", false, "also check SHOULD-level requirements")
		expected  = flag.String("expected-failures", "", "a file of requirement IDs expected to fail, one per line (# comments)")
		jsonOut   = flag.String("json-report", "", "write the verdicts as JSON to this file")
		junitOut  = flag.String("junit-report", "", "write the verdicts as JUnit XML to this file")
		timeout   = flag.Duration("timeout", conformance.DefaultTimeout, "per-step deadline asked of the implementation")
		wait      = flag.Duration("wait", conformance.DefaultWait, "how long the suite waits for any answer")
		list      = flag.Bool("list", false, "list every check with its labels as JSON lines, and run nothing")
		reference = flag.String("reference", "", "a trusted implementation's adapter command, to hand off to and from the one under test; \"builtin\" is the Go reference (graceful/)")
		allowSkip = flag.String("allow-skip", "", "requirement IDs (comma separated), or \"all\", whose checks may be skipped because this machine cannot run them (not root, no kernel support) without failing the run")
		jobs      = flag.Int("jobs", conformance.DefaultParallel, "how many scenarios run at once")
	)
	// Ginkgo's own flags (--ginkgo.label-filter, --ginkgo.v, ...) work
	// too; the usage lists ours.
	flag.CommandLine.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprintf(out, "usage: graceful-conformance --adapter 'CMD ARGS' [flags]\n\n")
		flag.VisitAll(func(f *flag.Flag) {
			if strings.HasPrefix(f.Name, "ginkgo.") {
				return
			}
			fmt.Fprintf(out, "  --%s\n    \t%s", f.Name, f.Usage)
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(out, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(out)
		})
		fmt.Fprintf(out, "\nGinkgo's --ginkgo.* flags apply as well, e.g. --ginkgo.label-filter 'iut:receiver && !slow'.\n")
	}
	flag.Parse()
	if *list {
		enc := json.NewEncoder(os.Stdout)
		for _, s := range conformance.List() {
			enc.Encode(s)
		}
		return 0
	}
	if *adapter == "" {
		flag.CommandLine.Usage()
		return 2
	}
	var xfail []string
	if *expected != "" {
		ids, err := conformance.ReadIDs(*expected)
		if err != nil {
			fmt.Fprintln(os.Stderr, "graceful-conformance:", err)
			return 2
		}
		xfail = ids
	}
	cfg := conformance.Config{Adapter: strings.Fields(*adapter), Strict: *strict, Timeout: *timeout, Wait: *wait, Parallel: *jobs}
	for _, id := range strings.Split(*allowSkip, ",") {
		if id = strings.TrimSpace(id); id != "" {
			cfg.AllowSkip = append(cfg.AllowSkip, id)
		}
	}
	switch *reference {
	case "":
	case "builtin":
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "graceful-conformance:", err)
			return 1
		}
		cfg.Reference = []string{self, referenceCommand}
	default:
		cfg.Reference = strings.Fields(*reference)
	}
	suiteCfg, reporterCfg := ginkgo.GinkgoConfiguration()
	if st, err := os.Stdout.Stat(); err == nil && st.Mode()&os.ModeCharDevice == 0 {
		reporterCfg.NoColor = true
	}
	res, err := conformance.Run(cfg, conformance.RunOptions{ExpectedFailures: xfail, Suite: &suiteCfg, Reporter: &reporterCfg})
	if err != nil {
		fmt.Fprintln(os.Stderr, "graceful-conformance:", err)
		if errors.Is(err, conformance.ErrUnknownRequirement) || errors.Is(err, conformance.ErrConfig) {
			return 2
		}
		return 1
	}
	fmt.Println()
	res.WriteTable(os.Stdout)
	for path, write := range map[string]func(string) error{*jsonOut: res.WriteJSON, *junitOut: res.WriteJUnit} {
		if path == "" {
			continue
		}
		if err := write(path); err != nil {
			fmt.Fprintln(os.Stderr, "graceful-conformance:", err)
			return 1
		}
	}
	if !res.Passed {
		return 1
	}
	return 0
}
