package conformance

import (
	"sort"
	"strings"

	"github.com/onsi/ginkgo/v2/types"
)

// Verdict is the grade of one requirement in a run.
type Verdict string

// Verdicts.
const (
	// VerdictPass: every check of the requirement passed.
	VerdictPass Verdict = "PASS"
	// VerdictFail: a check failed.
	VerdictFail Verdict = "FAIL"
	// VerdictExpectedFail: a check failed and the requirement is listed as an
	// expected failure.
	VerdictExpectedFail Verdict = "XFAIL"
	// VerdictUnexpectedPass: listed as an expected failure, yet every check
	// passed. The list is out of date: this fails the run.
	VerdictUnexpectedPass Verdict = "XPASS"
	// VerdictSkipped: its checks did not run (SHOULD without strict, a feature
	// the adapter does not offer, a label filter).
	VerdictSkipped Verdict = "SKIP"
	// VerdictUntested: no check names the requirement.
	VerdictUntested Verdict = "UNTESTED"
)

// SpecOutcome is one spec that checks a requirement.
type SpecOutcome struct {
	Name    string `json:"name"`
	State   string `json:"state"`
	Failure string `json:"failure,omitempty"`
	failed  bool
}

// RequirementResult is the verdict on one requirement.
type RequirementResult struct {
	Requirement
	Verdict Verdict `json:"verdict"`
	// Required: the run passes only if this requirement passes (MUST, and
	// SHOULD under strict).
	Required bool          `json:"required"`
	Specs    []SpecOutcome `json:"specs"`
}

// Result is the outcome of a run.
type Result struct {
	Adapter        []string            `json:"adapter"`
	Implementation string              `json:"implementation"`
	Strict         bool                `json:"strict"`
	Passed         bool                `json:"passed"`
	Requirements   []RequirementResult `json:"requirements"`
	// SuiteFailures are failures outside any requirement's specs (a
	// setup node of the suite).
	SuiteFailures []string `json:"suite_failures,omitempty"`
}

// Count returns how many requirements got verdict v.
func (r *Result) Count(v Verdict) int {
	n := 0
	for _, q := range r.Requirements {
		if q.Verdict == v {
			n++
		}
	}
	return n
}

// IDs returns the IDs of the requirements with verdict v, sorted.
func (r *Result) IDs(v Verdict) []string {
	var out []string
	for _, q := range r.Requirements {
		if q.Verdict == v {
			out = append(out, q.ID)
		}
	}
	sort.Strings(out)
	return out
}

func failedState(s types.SpecState) bool {
	return s.Is(types.SpecStateFailureStates)
}

// verdicts grades every requirement from a Ginkgo report.
func verdicts(report types.Report, strict bool, expected map[string]bool) *Result {
	res := &Result{Strict: strict}
	byID := map[string][]SpecOutcome{}
	for _, sr := range report.SpecReports {
		if sr.LeafNodeType != types.NodeTypeIt {
			if failedState(sr.State) {
				res.SuiteFailures = append(res.SuiteFailures, sr.LeafNodeType.String()+": "+sr.Failure.Message)
			}
			continue
		}
		o := SpecOutcome{Name: sr.FullText(), State: sr.State.String()}
		if failedState(sr.State) {
			o.Failure, o.failed = sr.Failure.Message, true
		}
		for _, l := range sr.Labels() {
			if id, ok := strings.CutPrefix(l, labelReq); ok {
				byID[id] = append(byID[id], o)
			}
		}
	}
	res.Passed = len(res.SuiteFailures) == 0
	for _, req := range Requirements() {
		q := RequirementResult{Requirement: req, Specs: byID[req.ID],
			Required: req.Level == Must || (strict && req.Level == Should)}
		ran, failed := false, false
		for _, s := range q.Specs {
			switch {
			case s.failed:
				failed = true
			case s.State == "passed":
				ran = true
			}
		}
		switch {
		case len(q.Specs) == 0:
			q.Verdict = VerdictUntested
		case failed && expected[req.ID]:
			q.Verdict = VerdictExpectedFail
		case failed:
			q.Verdict = VerdictFail
		case !ran:
			q.Verdict = VerdictSkipped
		case expected[req.ID]:
			q.Verdict = VerdictUnexpectedPass
		default:
			q.Verdict = VerdictPass
		}
		if q.Verdict == VerdictUnexpectedPass || (q.Required && q.Verdict == VerdictFail) {
			res.Passed = false
		}
		res.Requirements = append(res.Requirements, q)
	}
	return res
}
