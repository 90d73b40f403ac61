package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"
)

var _ = Describe("the embedded copies", func() {
	It("of spec/requirements.yaml and spec/adapter.schema.json are up to date (go generate)", func() {
		yml, err := os.ReadFile("../spec/requirements.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(requirementsYAML)).To(Equal(string(yml)))
		schema, err := os.ReadFile("../spec/adapter.schema.json")
		Expect(err).NotTo(HaveOccurred())
		Expect(string(adapterSchemaJSON)).To(Equal(string(schema)))
	})

	It("hold every requirement", func() {
		reqs := Requirements()
		Expect(len(reqs)).To(BeNumerically(">=", 40))
		Expect(reqs[0].ID).To(Equal("TRN-1"))
		for _, r := range reqs {
			Expect(r.Level).To(BeElementOf(Must, Should, May))
		}
	})
})

var _ = Describe("labels", func() {
	It("name each requirement, its role and its one level", func() {
		labels, level := reqLabels("FRM-2 ERR-1")
		Expect(level).To(Equal(Must))
		Expect(labels).To(ConsistOf("req:FRM-2", "req:ERR-1", "role:both", "level:MUST"))
	})
	It("refuse an unknown requirement", func() {
		Expect(func() { reqLabels("FRM-99") }).To(PanicWith(ContainSubstring("unknown requirement")))
	})
	It("refuse a spec that mixes levels", func() {
		Expect(func() { reqLabels("FRM-1 TRN-7") }).To(PanicWith(ContainSubstring("mixes levels")))
	})
})

// jsonExamples returns the one-line JSON examples of spec/adapter.md, in
// order: requests and the responses that follow them.
func jsonExamples() []string {
	GinkgoHelper()
	doc, err := os.ReadFile("../spec/adapter.md")
	Expect(err).NotTo(HaveOccurred())
	var out []string
	in, cur := false, ""
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "```json":
			in = true
		case line == "```" && in:
			in = false
			if cur != "" {
				out = append(out, cur)
				cur = ""
			}
		case in && strings.HasPrefix(line, "{") && cur != "":
			out = append(out, cur)
			cur = line
		case in:
			cur += line
		}
	}
	return out
}

var _ = Describe("the adapter schema", func() {
	It("accepts every example of spec/adapter.md, each response by its request's op", func() {
		examples := jsonExamples()
		Expect(len(examples)).To(BeNumerically(">=", 12))
		op := ""
		for _, ex := range examples {
			var head struct {
				Op *string `json:"op"`
			}
			Expect(json.Unmarshal([]byte(ex), &head)).To(Succeed(), ex)
			if head.Op != nil {
				op = *head.Op
				Expect(validate("request", []byte(ex))).To(Succeed(), ex)
				continue
			}
			Expect(op).NotTo(BeEmpty(), "a response before any request: %s", ex)
			Expect(validate(op+"Response", []byte(ex))).To(Succeed(), ex)
		}
	})

	DescribeTable("rejects a broken response",
		func(def, line string) { Expect(validate(def, []byte(line))).NotTo(Succeed()) },
		Entry("hello without pid", "helloResponse", `{"seq":1,"ok":true,"contract":1,"implementation":"x"}`),
		Entry("an unknown field", "serveResponse", `{"seq":2,"ok":true,"extra":1}`),
		Entry("a failure without error", "resultResponse", `{"seq":3,"ok":false}`),
		Entry("an unknown outcome", "resultResponse", `{"seq":3,"ok":true,"outcome":"maybe"}`),
		Entry("metadata that is not base64", "receiveResponse", `{"seq":2,"ok":true,"descriptors":[{"fd":3,"kind":null,"meta":"**"}]}`),
		Entry("a success with an error", "receiveResponse", `{"seq":2,"ok":true,"error":{"code":"OTHER","message":""},"descriptors":[]}`),
		Entry("exit without done", "exitResponse", `{"seq":4,"ok":true}`),
		Entry("not JSON", "exitResponse", `done`),
	)
	It("accepts extension fields starting with x-", func() {
		Expect(validate("serveResponse", []byte(`{"seq":2,"ok":true,"x-note":"hi"}`))).To(Succeed())
	})
})

var _ = Describe("verdicts", func() {
	spec := func(state types.SpecState, msg string, labels ...string) types.SpecReport {
		return types.SpecReport{LeafNodeType: types.NodeTypeIt, State: state, LeafNodeLabels: labels,
			Failure: types.Failure{Message: msg}}
	}
	failed := func(labels ...string) types.SpecReport { return spec(types.SpecStateFailed, "boom", labels...) }
	passed := func(labels ...string) types.SpecReport { return spec(types.SpecStatePassed, "", labels...) }
	report := func(specs ...types.SpecReport) types.Report { return types.Report{SpecReports: specs} }
	plain := grading{}
	strict := grading{strict: true}
	find := func(res *Result, id string) RequirementResult {
		for _, q := range res.Requirements {
			if q.ID == id {
				return q
			}
		}
		Fail("no requirement " + id)
		return RequirementResult{}
	}
	verdictOf := func(res *Result, id string) Verdict { return find(res, id).Verdict }

	It("fail a requirement when any of its specs fails, and the run with it", func() {
		res := verdicts(report(passed("req:FRM-1"), failed("req:FRM-1")), plain)
		Expect(verdictOf(res, "FRM-1")).To(Equal(VerdictFail))
		Expect(res.Passed).To(BeFalse())
	})
	It("pass a requirement whose specs all passed", func() {
		res := verdicts(report(passed("req:FRM-1")), plain)
		Expect(verdictOf(res, "FRM-1")).To(Equal(VerdictPass))
		Expect(verdictOf(res, "FRM-2")).To(Equal(VerdictUntested))
		Expect(find(res, "FRM-2").Why).To(ContainElement(ContainSubstring("no check")))
		Expect(res.Passed).To(BeTrue())
	})
	It("do not fail the run for a SHOULD unless strict", func() {
		r := report(failed("req:TRN-7"))
		Expect(verdicts(r, plain).Passed).To(BeTrue())
		Expect(verdicts(r, strict).Passed).To(BeFalse())
		Expect(verdicts(report(spec(types.SpecStateSkipped, skipNotStrict+"SHOULD", "req:TRN-7")), plain).Passed).To(BeTrue())
	})
	It("turn a listed failure into XFAIL and a listed pass into XPASS, which fails the run", func() {
		res := verdicts(report(failed("req:FRM-1"), passed("req:FRM-2")), grading{expected: map[string]bool{"FRM-1": true, "FRM-2": true}})
		Expect(verdictOf(res, "FRM-1")).To(Equal(VerdictExpectedFail))
		Expect(verdictOf(res, "FRM-2")).To(Equal(VerdictUnexpectedPass))
		Expect(res.Passed).To(BeFalse())
	})
	It("fail the run for a MUST skipped because the machine cannot run it, and say why", func() {
		res := verdicts(report(passed("req:AUTH-1"), spec(types.SpecStateSkipped, skipEnvironment+"needs root", "req:AUTH-1")), plain)
		q := find(res, "AUTH-1")
		Expect(q.Verdict).To(Equal(VerdictSkipped))
		Expect(q.Why).To(Equal([]string{"needs root"}))
		Expect(res.Passed).To(BeFalse())
		Expect(res.Skipped).To(HaveKeyWithValue(stateSkipped, 1))
	})
	It("let a skipped MUST pass the run when allowed, or listed as an expected failure", func() {
		r := report(spec(types.SpecStateSkipped, skipEnvironment+"needs root", "req:AUTH-1"))
		Expect(verdicts(r, grading{allowSkip: map[string]bool{"AUTH-1": true}}).Passed).To(BeTrue())
		Expect(verdicts(r, grading{allowSkip: map[string]bool{"all": true}}).Passed).To(BeTrue())
		Expect(verdicts(r, grading{expected: map[string]bool{"AUTH-1": true}}).Passed).To(BeTrue())
		Expect(verdicts(r, grading{allowSkip: map[string]bool{"AUTH-5": true}}).Passed).To(BeFalse())
	})
	It("fail the run for a SHOULD skipped under strict, not without", func() {
		r := report(spec(types.SpecStateSkipped, skipEnvironment+"no kernel support", "req:TRN-7"))
		Expect(verdicts(r, strict).Passed).To(BeFalse())
		Expect(verdicts(r, plain).Passed).To(BeTrue())
	})
	It("call a requirement untested when the adapter lacks a feature or a filter left its checks out", func() {
		res := verdicts(report(spec(types.SpecStateSkipped, skipUntested+"no feature dial", "req:AUTH-2"),
			spec(types.SpecStateSkipped, "", "req:FRM-1")), strict)
		Expect(verdictOf(res, "AUTH-2")).To(Equal(VerdictUntested))
		Expect(find(res, "AUTH-2").Why).To(Equal([]string{"no feature dial"}))
		Expect(verdictOf(res, "FRM-1")).To(Equal(VerdictUntested))
		Expect(res.Passed).To(BeTrue())
	})
	It("pass a requirement whose reachable checks passed while others need a feature", func() {
		res := verdicts(report(passed("req:LIM-2"), spec(types.SpecStateSkipped, skipUntested+"no feature limits", "req:LIM-2")), strict)
		Expect(verdictOf(res, "LIM-2")).To(Equal(VerdictPass))
	})
	It("fail the run on a failed setup node", func() {
		s := failed()
		s.LeafNodeType = types.NodeTypeBeforeSuite
		Expect(verdicts(report(s), plain).Passed).To(BeFalse())
	})
})
