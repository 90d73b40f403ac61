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
	// VerdictPass: every check of the requirement that ran passed, and none
	// was skipped because the machine could not run it.
	VerdictPass Verdict = "PASS"
	// VerdictFail: a check failed.
	VerdictFail Verdict = "FAIL"
	// VerdictExpectedFail: a check failed and the requirement is listed as an
	// expected failure.
	VerdictExpectedFail Verdict = "XFAIL"
	// VerdictUnexpectedPass: listed as an expected failure, yet every check
	// passed. The list is out of date: this fails the run.
	VerdictUnexpectedPass Verdict = "XPASS"
	// VerdictSkipped: no check failed, and some were skipped because the
	// machine cannot run them (not root, no kernel support), or, for a
	// SHOULD, because the run is not strict. A required requirement (a
	// MUST; a SHOULD under strict) skipped so fails the run unless it is
	// allowed (--allow-skip) or listed as an expected failure.
	VerdictSkipped Verdict = "SKIP"
	// VerdictUntested: no check reached the requirement: none names it,
	// the adapter does not offer the feature its checks need, or the
	// run's label filter left them out. It does not fail the run; the
	// report says why.
	VerdictUntested Verdict = "UNTESTED"
)

// Outcomes of one spec.
const (
	statePassed   = "passed"
	stateFailed   = "failed"
	stateSkipped  = "skipped"  // the machine cannot run it
	stateStrict   = "strict"   // SHOULD, without strict
	stateUntested = "untested" // the adapter lacks a feature
	stateFiltered = "filtered" // not selected by the run's filter
)

// SpecOutcome is one spec that checks a requirement.
type SpecOutcome struct {
	Name string `json:"name"`
	// State: passed, failed, skipped (the machine cannot run it), strict
	// (a SHOULD in a run without strict), untested (the adapter lacks a
	// feature), filtered (left out by the run's filter).
	State string `json:"state"`
	// Failure is why it failed, or why it did not run.
	Failure string `json:"failure,omitempty"`
}

func (s SpecOutcome) failed() bool { return s.State == stateFailed }

// RequirementResult is the verdict on one requirement.
type RequirementResult struct {
	Requirement
	Verdict Verdict `json:"verdict"`
	// Required: the run passes only if this requirement passes (MUST, and
	// SHOULD under strict), or is allowed to be skipped.
	Required bool `json:"required"`
	// Allowed: skipped, and allowed to be (--allow-skip or an expected
	// failure).
	Allowed bool          `json:"allowed,omitempty"`
	Specs   []SpecOutcome `json:"specs"`
	// Why says why a requirement is SKIP or UNTESTED: each distinct
	// reason its checks gave.
	Why []string `json:"why,omitempty"`
}

// count returns how many of the requirement's specs are in state.
func (q RequirementResult) count(state string) int {
	n := 0
	for _, s := range q.Specs {
		if s.State == state {
			n++
		}
	}
	return n
}

// Result is the outcome of a run.
type Result struct {
	Adapter        []string            `json:"adapter"`
	Implementation string              `json:"implementation"`
	Features       []string            `json:"features"`
	Strict         bool                `json:"strict"`
	Passed         bool                `json:"passed"`
	Requirements   []RequirementResult `json:"requirements"`
	// SuiteFailures are failures outside any requirement's specs (a
	// setup node of the suite).
	SuiteFailures []string `json:"suite_failures,omitempty"`
	// Skipped counts the specs that did not run, by reason.
	Skipped map[string]int `json:"skipped,omitempty"`
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

// outcomeOf classifies one spec report.
func outcomeOf(sr types.SpecReport) SpecOutcome {
	o := SpecOutcome{Name: sr.FullText(), State: statePassed}
	msg := sr.Failure.Message
	switch {
	case failedState(sr.State):
		o.State, o.Failure = stateFailed, msg
	case sr.State == types.SpecStateSkipped || sr.State == types.SpecStatePending:
		switch {
		case msg == "":
			o.State, o.Failure = stateFiltered, "not selected by the run's filter"
		case strings.HasPrefix(msg, skipNotStrict):
			o.State, o.Failure = stateStrict, strings.TrimPrefix(msg, skipNotStrict)
		case strings.HasPrefix(msg, skipUntested):
			o.State, o.Failure = stateUntested, strings.TrimPrefix(msg, skipUntested)
		default:
			o.State, o.Failure = stateSkipped, strings.TrimPrefix(msg, skipEnvironment)
		}
	case sr.State != types.SpecStatePassed:
		o.State, o.Failure = stateFailed, sr.State.String()
	}
	return o
}

// grading says how to grade a run: strict, the requirements listed as
// expected failures, and those allowed to be skipped ("all" for every one).
type grading struct {
	strict    bool
	expected  map[string]bool
	allowSkip map[string]bool
}

// verdicts grades every requirement from a Ginkgo report.
func verdicts(report types.Report, g grading) *Result {
	res := &Result{Strict: g.strict, Skipped: map[string]int{}}
	byID := map[string][]SpecOutcome{}
	for _, sr := range report.SpecReports {
		if sr.LeafNodeType != types.NodeTypeIt {
			if failedState(sr.State) {
				res.SuiteFailures = append(res.SuiteFailures, sr.LeafNodeType.String()+": "+sr.Failure.Message)
			}
			continue
		}
		o := outcomeOf(sr)
		if o.State != statePassed && o.State != stateFailed {
			res.Skipped[o.State]++
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
			Required: req.Level == Must || (g.strict && req.Level == Should)}
		why := map[string]bool{}
		note := func(states ...string) {
			for _, s := range q.Specs {
				for _, st := range states {
					if s.State == st && !why[s.Failure] {
						why[s.Failure] = true
						q.Why = append(q.Why, s.Failure)
					}
				}
			}
		}
		expected := g.expected[req.ID]
		switch {
		case q.count(stateFailed) > 0 && expected:
			q.Verdict = VerdictExpectedFail
		case q.count(stateFailed) > 0:
			q.Verdict = VerdictFail
		case q.count(stateSkipped) > 0:
			q.Verdict = VerdictSkipped
			note(stateSkipped)
			q.Allowed = expected || g.allowSkip[req.ID] || g.allowSkip["all"]
		case q.count(statePassed) > 0 && expected:
			q.Verdict = VerdictUnexpectedPass
		case q.count(statePassed) > 0:
			q.Verdict = VerdictPass
		case q.count(stateStrict) > 0:
			q.Verdict = VerdictSkipped
			note(stateStrict)
		default:
			q.Verdict = VerdictUntested
			note(stateUntested, stateFiltered)
			if len(q.Specs) == 0 {
				q.Why = append(q.Why, "no check of the suite names it")
			}
		}
		switch {
		case q.Verdict == VerdictUnexpectedPass:
			res.Passed = false
		case q.Required && q.Verdict == VerdictFail:
			res.Passed = false
		case q.Required && q.Verdict == VerdictSkipped && !q.Allowed:
			res.Passed = false
		}
		res.Requirements = append(res.Requirements, q)
	}
	return res
}
