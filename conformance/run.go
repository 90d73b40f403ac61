package conformance

import (
	"bufio"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"
)

// RunOptions tune Run.
type RunOptions struct {
	// ExpectedFailures lists requirement IDs known to fail: they do not
	// fail the run, and passing is reported as XPASS (which does).
	ExpectedFailures []string
	// Suite and Reporter are Ginkgo's configuration (label filter, report
	// files, verbosity); the zero values are Ginkgo's defaults as set by
	// its command-line flags (GinkgoConfiguration).
	Suite    *types.SuiteConfig
	Reporter *types.ReporterConfig
}

// ReadIDs reads requirement IDs from a file, one per line; # starts a
// comment (the format of --expected-failures).
func ReadIDs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if id := strings.TrimSpace(line); id != "" {
			ids = append(ids, id)
		}
	}
	return ids, sc.Err()
}

// ErrUnknownRequirement is returned for an expected failure that names no
// requirement.
var ErrUnknownRequirement = fmt.Errorf("conformance: unknown requirement")

// Probe starts the adapter once and returns the implementation's name and
// the features its adapter offers, to fail early on an adapter that does
// not start.
func Probe(cfg Config) (name string, features []string, err error) {
	if err := cfg.check(); err != nil {
		return "", nil, err
	}
	a, err := startAdapter("probe", cfg.Adapter, nil, cfg.wait(), cfg.Log)
	if err != nil {
		return "", nil, err
	}
	// The checks judge how the adapter ends its runs; the probe only
	// needs the handshake.
	a.kill()
	return a.hello.Implementation, a.hello.Features, nil
}

// Run runs the whole suite in this process and grades every requirement.
// It calls RunSpecs, which runs once per process: one Run per process.
func Run(cfg Config, opts RunOptions) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	g := grading{strict: cfg.Strict, expected: map[string]bool{}, allowSkip: map[string]bool{}}
	for _, id := range opts.ExpectedFailures {
		if _, ok := lookup(id); !ok {
			return nil, fmt.Errorf("%w %q in the expected failures", ErrUnknownRequirement, id)
		}
		g.expected[id] = true
	}
	for _, id := range cfg.AllowSkip {
		if _, ok := lookup(id); !ok && id != "all" {
			return nil, fmt.Errorf("%w %q in the requirements allowed to be skipped", ErrUnknownRequirement, id)
		}
		g.allowSkip[id] = true
	}
	name, features, err := Probe(cfg)
	if err != nil {
		return nil, err
	}
	suiteCfg, reporterCfg := GinkgoConfiguration()
	if opts.Suite != nil {
		suiteCfg = *opts.Suite
	}
	if opts.Reporter != nil {
		reporterCfg = *opts.Reporter
	}
	cfg.filter, cfg.filterSet = suiteCfg.LabelFilter, true
	var report types.Report
	RegisterFailHandler(Fail)
	GinkgoTest(&cfg)
	ReportAfterSuite("verdicts", func(r Report) { report = r })
	RunSpecs(&failRecorder{}, SuiteName, suiteCfg, reporterCfg)
	res := verdicts(report, g)
	res.Adapter, res.Implementation, res.Features = cfg.Adapter, name, features
	return res, nil
}

// failRecorder is the GinkgoTestingT of a run outside go test.
type failRecorder struct{ failed bool }

func (f *failRecorder) Fail() { f.failed = true }

// SpecInfo is one spec of the suite, for listings and traceability.
type SpecInfo struct {
	Name   string   `json:"name"`
	Labels []string `json:"labels"`
}

// List returns every spec of the suite without running any (Ginkgo's
// PreviewSpecs: once per process, instead of Run).
func List() []SpecInfo {
	cfg := Config{Adapter: []string{"unused"}}
	GinkgoTest(&cfg)
	suiteCfg, _ := GinkgoConfiguration()
	report := PreviewSpecs(SuiteName, suiteCfg)
	var out []SpecInfo
	for _, sr := range report.SpecReports {
		if sr.LeafNodeType == types.NodeTypeIt {
			out = append(out, SpecInfo{Name: sr.FullText(), Labels: sr.Labels()})
		}
	}
	return out
}

// WriteTable prints the verdict on every requirement, why any was not
// fully checked, and the summary line.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tLEVEL\tROLE\tVERDICT\tCHECKS\tSECTION\n")
	for _, q := range r.Requirements {
		mark := ""
		switch {
		case q.Verdict == VerdictFail && !q.Required:
			mark = " (not required)"
		case q.Verdict == VerdictSkipped && q.Required && q.Allowed:
			mark = " (allowed)"
		case q.Verdict == VerdictSkipped && q.Required:
			mark = " (required)"
		}
		checks := fmt.Sprintf("%d/%d", q.count(statePassed), len(q.Specs))
		if n := len(q.Specs) - q.count(statePassed) - q.count(stateFailed); n > 0 && q.count(statePassed) > 0 {
			checks += fmt.Sprintf(" (%d did not run)", n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\t%s\t%s\n", q.ID, q.Level, q.Role, q.Verdict, mark, checks, q.Section)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, q := range r.Requirements {
		switch q.Verdict {
		case VerdictFail, VerdictUnexpectedPass:
			fmt.Fprintf(w, "\n%s %s (%s): %s\n", q.ID, q.Verdict, q.Level, q.Text)
			for _, s := range q.Specs {
				if s.failed() {
					fmt.Fprintf(w, "  failed: %s\n", s.Name)
				}
			}
			if q.Verdict == VerdictUnexpectedPass {
				fmt.Fprintf(w, "  listed as an expected failure, but every check passed: remove it from the list\n")
			}
		case VerdictSkipped, VerdictUntested:
			if q.Verdict == VerdictSkipped && !q.Required {
				continue
			}
			if q.count(stateFiltered) == len(q.Specs) && len(q.Specs) > 0 {
				continue // the summary line counts them
			}
			fmt.Fprintf(w, "\n%s %s (%s): %s\n", q.ID, q.Verdict, q.Level, strings.Join(q.Why, "; "))
			if q.Verdict == VerdictSkipped && !q.Allowed {
				fmt.Fprintf(w, "  a required requirement that was not checked fails the run: run where it can be checked, or name it in --allow-skip\n")
			}
		}
	}
	for _, f := range r.SuiteFailures {
		fmt.Fprintf(w, "\nsuite failure: %s\n", f)
	}
	status := "PASSED"
	if !r.Passed {
		status = "FAILED"
	}
	fmt.Fprintf(w, "\n%s %s: %d pass, %d fail, %d expected fail, %d unexpected pass, %d skipped, %d untested (strict=%v)\n",
		r.Implementation, status, r.Count(VerdictPass), r.Count(VerdictFail), r.Count(VerdictExpectedFail),
		r.Count(VerdictUnexpectedPass), r.Count(VerdictSkipped), r.Count(VerdictUntested), r.Strict)
	if len(r.Skipped) > 0 {
		var parts []string
		for _, st := range []string{stateSkipped, stateUntested, stateStrict, stateFiltered} {
			if n := r.Skipped[st]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, map[string]string{
					stateSkipped:  "skipped (the machine cannot run them: not root, no kernel support)",
					stateUntested: "untested (the adapter lacks a feature)",
					stateStrict:   "skipped (SHOULD, without --strict)",
					stateFiltered: "left out by the filter",
				}[st]))
			}
		}
		fmt.Fprintf(w, "checks that did not run: %s\n", strings.Join(parts, ", "))
	}
	return nil
}

// WriteJSON writes the result as JSON.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteJUnit writes one JUnit test case per requirement.
func (r *Result) WriteJUnit(path string) error {
	type failure struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	}
	type skipped struct {
		Message string `xml:"message,attr"`
	}
	type testcase struct {
		Name      string   `xml:"name,attr"`
		Classname string   `xml:"classname,attr"`
		Failure   *failure `xml:"failure,omitempty"`
		Skipped   *skipped `xml:"skipped,omitempty"`
	}
	type testsuite struct {
		XMLName  xml.Name   `xml:"testsuite"`
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Skipped  int        `xml:"skipped,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	ts := testsuite{Name: SuiteName + ": " + r.Implementation}
	for _, q := range r.Requirements {
		tc := testcase{Name: fmt.Sprintf("[%s] %s (%s): %s", q.ID, q.Level, q.Role, q.Text), Classname: q.Section}
		switch q.Verdict {
		case VerdictFail, VerdictUnexpectedPass:
			var msgs []string
			for _, s := range q.Specs {
				if s.failed() {
					msgs = append(msgs, s.Name+"\n"+s.Failure)
				}
			}
			if q.Verdict == VerdictUnexpectedPass {
				msgs = append(msgs, "listed as an expected failure, but every check passed")
			}
			if q.Required || q.Verdict == VerdictUnexpectedPass {
				tc.Failure = &failure{Message: string(q.Verdict), Type: string(q.Level), Text: strings.Join(msgs, "\n\n")}
				ts.Failures++
			} else {
				tc.Skipped = &skipped{Message: "failed, not required: " + strings.Join(msgs, "; ")}
				ts.Skipped++
			}
		case VerdictSkipped, VerdictUntested, VerdictExpectedFail:
			msg := string(q.Verdict)
			if len(q.Why) > 0 {
				msg += ": " + strings.Join(q.Why, "; ")
			}
			if q.Verdict == VerdictSkipped && q.Required && !q.Allowed {
				tc.Failure = &failure{Message: msg, Type: string(q.Level), Text: "a required requirement that was not checked"}
				ts.Failures++
				break
			}
			tc.Skipped = &skipped{Message: msg}
			ts.Skipped++
		}
		ts.Cases = append(ts.Cases, tc)
	}
	ts.Tests = len(ts.Cases)
	b, err := xml.MarshalIndent(ts, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(xml.Header), append(b, '\n')...), 0o644)
}
