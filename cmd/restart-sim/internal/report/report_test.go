package report_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

func msd(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

var _ = Describe("percentiles and summaries", func() {
	It("uses the nearest rank", func() {
		sorted := make([]time.Duration, 100)
		for i := range sorted {
			sorted[i] = time.Duration(i+1) * time.Millisecond
		}
		Expect(report.Percentile(sorted, 0.50)).To(Equal(50 * time.Millisecond))
		Expect(report.Percentile(sorted, 0.99)).To(Equal(99 * time.Millisecond))
		Expect(report.Percentile(sorted, 1)).To(Equal(100 * time.Millisecond))
		Expect(report.Percentile(sorted[:1], 0.99)).To(Equal(time.Millisecond))
		Expect(report.Percentile(nil, 0.5)).To(BeZero())
	})

	It("summarises unsorted durations in milliseconds", func() {
		s := report.Summarize([]time.Duration{msd(3), msd(1), msd(2), msd(10)})
		Expect(s).To(Equal(report.Summary{Count: 4, P50Ms: 2, P99Ms: 10, MaxMs: 10}))
		Expect(report.Summarize(nil)).To(Equal(report.Summary{}))
	})

	It("compares the restart phase with the baseline as ratios", func() {
		c := report.Compare(report.Summary{Count: 1, P50Ms: 2, P99Ms: 4, MaxMs: 5}, report.Summary{Count: 1, P50Ms: 3, P99Ms: 5, MaxMs: 20})
		Expect(c.RatioP50).To(Equal(1.5))
		Expect(c.RatioP99).To(Equal(1.25))
		Expect(c.RatioMax).To(Equal(4.0))
		Expect(report.Compare(report.Summary{}, report.Summary{Count: 1, P50Ms: 1}).RatioP50).To(BeZero())
	})

	It("splits successful samples by phase and leaves failures out", func() {
		ph := report.Phases{BaselineStartS: 1, BaselineEndS: 2, RestartStartS: 2, RestartEndS: 3}
		samples := []report.Sample{
			{At: 500 * time.Millisecond, Latency: msd(100)},                           // warmup: neither
			{At: 1500 * time.Millisecond, Latency: msd(1)},                            // baseline
			{At: 1600 * time.Millisecond, Latency: msd(900), Outcome: report.Timeout}, // failed: neither
			{At: 2500 * time.Millisecond, Latency: msd(3)},                            // restarts
			{At: 2600 * time.Millisecond, Latency: msd(5)},                            // restarts
			{At: 3500 * time.Millisecond, Latency: msd(100)},                          // after: neither
		}
		lc := report.PhaseLatency(samples, ph)
		Expect(lc.Baseline).To(Equal(report.Summary{Count: 1, P50Ms: 1, P99Ms: 1, MaxMs: 1}))
		Expect(lc.Restarts).To(Equal(report.Summary{Count: 2, P50Ms: 3, P99Ms: 5, MaxMs: 5}))
		Expect(lc.RatioP99).To(Equal(5.0))
	})

	It("counts outcomes and what each generation served", func() {
		samples := []report.Sample{
			{Gen: 0}, {Gen: 0}, {Gen: 1}, {Gen: -1, Outcome: report.Reset}, {Gen: -1, Outcome: report.Reset},
			{Gen: -1, Outcome: report.EOF},
		}
		ok, failedBy := report.CountOutcomes(samples)
		Expect(ok).To(Equal(int64(3)))
		Expect(failedBy).To(Equal(map[string]int64{"reset": 2, "eof": 1}))
		Expect(report.ServedBy(samples)).To(Equal(map[int]int64{0: 2, 1: 1}))
	})

	It("gives the range of the reported counts", func() {
		Expect(report.RangeOf([]int{5, -1, 3, 7})).To(Equal(report.Range{Min: 3, Max: 7}))
		Expect(report.RangeOf(nil)).To(Equal(report.Range{Min: -1, Max: -1}))
	})
})

var _ = Describe("Classify", func() {
	It("names the cause of real network errors", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		addr := ln.Addr().String()
		Expect(ln.Close()).To(Succeed())
		_, err = net.DialTimeout("tcp", addr, time.Second)
		Expect(report.Classify(err)).To(Equal(report.Refused))

		Expect(report.Classify(nil)).To(Equal(report.OK))
		Expect(report.Classify(fmt.Errorf("read: %w", syscall.ECONNRESET))).To(Equal(report.Reset))
		Expect(report.Classify(fmt.Errorf("write: %w", syscall.EPIPE))).To(Equal(report.Reset))
		Expect(report.Classify(io.ErrUnexpectedEOF)).To(Equal(report.EOF))
		Expect(report.Classify(errors.New(`Get "http://x": EOF`))).To(Equal(report.EOF))
		Expect(report.Classify(os.ErrDeadlineExceeded)).To(Equal(report.Timeout))
		Expect(report.Classify(errors.New("something else"))).To(Equal(report.Other))
	})
})

// passing is a report of a run where nothing went wrong.
func passing() *report.Report {
	return &report.Report{
		Schema: report.SchemaID,
		Config: report.Config{Restarts: 2, IntervalMs: 200, BaselineMs: 1000, Concurrency: 1, RatePerClient: 100,
			RequestTimeoutMs: 2000, ReadyTimeoutMs: 2000, Loads: []string{"http"}, Faults: []string{}, LatencyTarget: 1.3},
		Phases: report.Phases{BaselineStartS: 1, BaselineEndS: 2, RestartStartS: 2, RestartEndS: 2.4, EndS: 3},
		Restarts: report.Restarts{Requested: 2, Attempted: 2, Done: 2, Attempts: []report.Attempt{
			{Index: 1, Gen: 1, From: 0, AtS: 2, OK: true, HandoffMs: 5},
			{Index: 2, Gen: 2, From: 1, AtS: 2.2, OK: true, HandoffMs: 6},
		}},
		Loads: []report.Load{{Name: "http", Sent: 10, OK: 10, FailedBy: map[string]int64{}}},
		Generations: []report.Generation{
			{Gen: 0, PID: 10, Outcome: report.Retired, Served: map[string]int64{"http": 4}, FdsAfterHandoff: 14, FdsAtExit: 10, Serves: serves()},
			{Gen: 1, PID: 11, Outcome: report.Retired, Served: map[string]int64{"http": 3}, FdsAfterHandoff: 19, FdsAtExit: 10, Serves: serves()},
			{Gen: 2, PID: 12, Outcome: report.Final, Served: map[string]int64{"http": 3}, FdsAfterHandoff: 19, FdsAtExit: 10, Serves: serves()},
		},
		Supervisor: report.Supervisor{PID: 1, GenerationsReaped: 3},
	}
}

func serves() map[string]string {
	return map[string]string{"http": "127.0.0.1:1000", "stream": "127.0.0.1:1001"}
}

// withLatency gives the report's one load p99 latencies in both phases.
func withLatency(r *report.Report, baselineP99, restartsP99 float64) *report.Report {
	r.Loads[0].Latency = report.Compare(report.Summary{Count: 5, P50Ms: 1, P99Ms: baselineP99, MaxMs: baselineP99},
		report.Summary{Count: 5, P50Ms: 1, P99Ms: restartsP99, MaxMs: restartsP99})
	return r
}

var _ = Describe("the verdict", func() {
	judged := func(r *report.Report, interrupted bool) *report.Report {
		r.FdAccounting(12, 12)
		r.Judge(interrupted)
		return r
	}

	It("passes when nothing went wrong, with exit code 0", func() {
		r := judged(passing(), false)
		Expect(r.Fds.Flat).To(BeTrue())
		Expect(r.Verdict).To(Equal(report.Verdict{Pass: true, Problems: []string{},
			Latency: report.LatencyVerdict{Target: 1.3, Met: true, Missed: []string{}}}))
		Expect(r.ExitCode()).To(Equal(0))
	})

	It("says interrupted, with exit code 3, when a clean run was stopped early", func() {
		r := passing()
		r.Restarts.Done = 1
		r = judged(r, true)
		Expect(r.Verdict.Pass).To(BeTrue())
		Expect(r.ExitCode()).To(Equal(3))
	})

	DescribeTable("fails, with exit code 1, on",
		func(breakIt func(*report.Report), fdsEnd int, problem string) {
			r := passing()
			breakIt(r)
			r.FdAccounting(12, fdsEnd)
			r.Judge(false)
			Expect(r.Verdict.Pass).To(BeFalse())
			Expect(r.Verdict.Problems).To(ContainElement(ContainSubstring(problem)))
			Expect(r.ExitCode()).To(Equal(1))
		},
		Entry("a failed request", func(r *report.Report) {
			r.Loads[0].Failed, r.Loads[0].FailedBy = 2, map[string]int64{"reset": 2}
		}, 12, "http: 2 failed (reset 2)"),
		Entry("a lost datagram", func(r *report.Report) { r.Loads[0].Lost = 1 }, 12, "http: 1 lost"),
		Entry("a duplicate", func(r *report.Report) { r.Loads[0].Duplicated = 3 }, 12, "http: 3 duplicated"),
		Entry("a restart that failed without a fault", func(r *report.Report) { r.Restarts.Failed = 1 }, 12, "1 restarts failed"),
		Entry("a fault that was not rolled back", func(r *report.Report) {
			r.Restarts.Attempts = append(r.Restarts.Attempts, report.Attempt{Index: 3, Fault: "crash"})
		}, 12, `injected fault "crash" was not rolled back`),
		Entry("fewer restarts than asked", func(r *report.Report) { r.Restarts.Done = 1 }, 12, "only 1 of 2 restarts"),
		Entry("a generation that failed", func(r *report.Report) {
			r.Generations[1].Outcome, r.Generations[1].Exit = report.Failed, "exit status 1"
		}, 12, "generation 1 failed (exit status 1)"),
		Entry("a generation not reaped", func(r *report.Report) { r.Supervisor.GenerationsReaped = 2 }, 12, "2 of 3 generations reaped"),
		Entry("descriptors growing in a generation", func(r *report.Report) { r.Generations[2].FdsAfterHandoff = 20 }, 12, "not flat"),
		Entry("descriptors left at exit", func(r *report.Report) { r.Generations[1].FdsAtExit = 11 }, 12, "not flat"),
		Entry("a count missing", func(r *report.Report) { r.Generations[1].FdsAtExit = -1 }, 12, "not flat"),
		Entry("descriptors growing in the supervisor", func(*report.Report) {}, 13, "supervisor 12 -> 13"),
		Entry("a keep-alive request sent twice", func(r *report.Report) { r.Loads[0].Retried = 2 }, 12,
			"http: 2 retried: the server closed a reused keep-alive connection with the request in flight"),
		Entry("a listener served at another address than the first generation's", func(r *report.Report) {
			r.Generations[2].Serves = map[string]string{"http": "127.0.0.1:1000", "stream": "127.0.0.1:2002"}
		}, 12, "stream: generation 2 serves at 127.0.0.1:2002, not at 127.0.0.1:1001: it did not take the stream descriptor over"),
		Entry("a connection refused while a crashed generation was replaced, with crash safety on", func(r *report.Report) {
			r.Config.CrashSafety = true
			r.Loads[0].Failed, r.Loads[0].FailedBy = 3, map[string]int64{"refused": 3}
			r.Loads[0].DuringCrashes = report.Trouble{Failed: 3, FailedBy: map[string]int64{"refused": 3}}
		}, 12, "http: 3 refused while a crashed generation was being replaced: the listener or socket did not outlive it"),
		Entry("a failure outside the crashes", func(r *report.Report) {
			r.Loads[0].Failed, r.Loads[0].FailedBy = 3, map[string]int64{"reset": 3}
			r.Loads[0].DuringCrashes = report.Trouble{Failed: 2, FailedBy: map[string]int64{"reset": 2}}
		}, 12, "http: 1 failed (reset 1)"),
		Entry("a crash the service did not recover from", func(r *report.Report) {
			r.Restarts.Attempts = append(r.Restarts.Attempts, report.Attempt{Index: 3, Fault: "sigkill", Error: "no generation served"})
		}, 12, `restart 3: the service did not recover from fault "sigkill" (no generation served)`),
		Entry("a missed latency target with -fail-on-latency", func(r *report.Report) {
			withLatency(r, 2, 2.8).Config.FailOnLatency = true
		}, 12, "latency target missed (-fail-on-latency): http p99 1.40x (target 1.3x of the baseline)"),
	)

	Describe("the latency target", func() {
		It("is met within 1.3x, and a miss is reported apart without failing the run", func() {
			r := judged(withLatency(passing(), 2, 2.6), false)
			Expect(r.Verdict.Latency).To(Equal(report.LatencyVerdict{Target: 1.3, Met: true, Missed: []string{}}))

			r = judged(withLatency(passing(), 2, 2.8), false)
			Expect(r.Verdict.Latency).To(Equal(report.LatencyVerdict{Target: 1.3, Met: false, Missed: []string{"http"}}))
			Expect(r.Verdict.Pass).To(BeTrue())
			var out bytes.Buffer
			Expect(r.WriteText(&out, false)).To(Succeed())
			Expect(out.String()).To(ContainSubstring("LATENCY MISSED: http p99 1.40x (target 1.3x of the baseline); reported, does not fail the run (-fail-on-latency would)\nPASS"))
		})

		It("follows the configured target and leaves out loads without both phases", func() {
			r := withLatency(passing(), 2, 2.8)
			r.Config.LatencyTarget = 1.5
			r.Loads = append(r.Loads, report.Load{Name: "file", Sent: 3, OK: 3})
			Expect(judged(r, false).Verdict.Latency).To(Equal(report.LatencyVerdict{Target: 1.5, Met: true, Missed: []string{}}))
		})
	})

	It("excuses what failed while a crashed generation was replaced, and refused connections without crash safety", func() {
		r := passing()
		r.Restarts.Attempts = append(r.Restarts.Attempts, report.Attempt{Index: 3, Fault: "sigkill", OK: true, RecoveryMs: 9})
		r.Loads[0].Failed, r.Loads[0].FailedBy = 5, map[string]int64{"refused": 3, "reset": 2}
		r.Loads[0].Retried = 1
		r.Loads[0].DuringCrashes = report.Trouble{Failed: 5, FailedBy: map[string]int64{"refused": 3, "reset": 2}, Retried: 1}
		r = judged(r, false)
		Expect(r.Verdict.Problems).To(BeEmpty())
		Expect(r.ExitCode()).To(Equal(0))
	})

	It("leaves the first generation and rolled-back generations out of the hand-off comparison", func() {
		r := passing()
		r.Generations = append(r.Generations, report.Generation{Gen: 3, Outcome: report.RolledBack, FdsAfterHandoff: 40, FdsAtExit: -1})
		r.FdAccounting(12, 12)
		Expect(r.Fds.AfterHandoff).To(Equal(report.Range{Min: 19, Max: 19}))
		Expect(r.Fds.AtExit).To(Equal(report.Range{Min: 10, Max: 10}))
		Expect(r.Fds.Flat).To(BeTrue())
	})
})

var _ = Describe("the outputs", func() {
	It("prints a terminal report with the numbers and the verdict", func() {
		r := passing()
		r.Loads[0].Failed, r.Loads[0].FailedBy = 1, map[string]int64{"eof": 1}
		r.FdAccounting(12, 12)
		r.Judge(false)
		var out bytes.Buffer
		Expect(r.WriteText(&out, true)).To(Succeed())
		text := out.String()
		Expect(text).To(ContainSubstring("RESTARTS  2 done, 0 failed"))
		Expect(text).To(MatchRegexp(`http\s+10\s+10\s+1\s+0\s+0\s+0\s+eof 1`))
		Expect(text).To(ContainSubstring("after hand-off 19 in every generation, at exit 10 in every generation"))
		Expect(text).To(ContainSubstring("supervisor pid 1 reaped 3 of 3 generations"))
		Expect(text).To(ContainSubstring("LATENCY MET: p99 during restarts within 1.3x of the baseline for every load\nFAIL\n  - http: 1 failed (eof 1)"))
	})

	It("writes JSON that the documented schema accepts", func() {
		r := passing()
		r.FdAccounting(12, 12)
		r.Judge(false)
		var out bytes.Buffer
		Expect(r.WriteJSON(&out)).To(Succeed())
		Expect(validate(out.Bytes())).To(Succeed())
	})

	It("has a schema that rejects a report it does not describe", func() {
		var out bytes.Buffer
		Expect(passing().WriteJSON(&out)).To(Succeed())
		var doc map[string]any
		Expect(json.Unmarshal(out.Bytes(), &doc)).To(Succeed())
		doc["surprise"] = 1
		bad, err := json.Marshal(doc)
		Expect(err).NotTo(HaveOccurred())
		Expect(validate(bad)).To(HaveOccurred())
	})

	It("draws an SVG chart with the latency lines and the restart markers", func() {
		r := passing()
		r.Restarts.Attempts = append(r.Restarts.Attempts, report.Attempt{Index: 3, Fault: "crash", AtS: 2.3, RolledBack: true})
		var samples []report.Sample
		for i := range 300 {
			samples = append(samples, report.Sample{At: time.Duration(i) * 10 * time.Millisecond, Latency: msd(1 + float64(i%7))})
		}
		samples = append(samples, report.Sample{At: 2500 * time.Millisecond, Latency: msd(2000), Outcome: report.Timeout})
		path := filepath.Join(GinkgoT().TempDir(), "chart.svg")
		Expect(report.SaveChart(path, samples, r)).To(Succeed())
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(xml.Unmarshal(data, new(struct{ XMLName xml.Name }))).To(Succeed())
		svg := string(data)
		for _, label := range []string{"p50", "p99", "max", "restart phase begins", "failed or rolled-back restart", "failed request"} {
			Expect(svg).To(ContainSubstring(label))
		}
	})

	It("leaves out the markers of successful restarts when there are hundreds", func() {
		r := passing()
		r.Restarts.Attempts = nil
		for i := range 300 {
			r.Restarts.Attempts = append(r.Restarts.Attempts, report.Attempt{Index: i + 1, AtS: 2 + float64(i)/100, OK: true})
		}
		r.Restarts.Done = 300
		samples := []report.Sample{{At: time.Second, Latency: msd(1)}, {At: 3 * time.Second, Latency: msd(2)}}
		path := filepath.Join(GinkgoT().TempDir(), "chart.svg")
		Expect(report.SaveChart(path, samples, r)).To(Succeed())
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(data)).To(ContainSubstring("300 restarts, markers omitted"))
	})

	It("refuses a chart format it cannot write", func() {
		err := report.SaveChart(filepath.Join(GinkgoT().TempDir(), "chart.gif"), nil, passing())
		Expect(err).To(MatchError(report.ErrChartFormat))
		Expect(report.ChartFormatOK("a.SVG")).To(BeTrue())
	})
})

func validate(doc []byte) error {
	c := jsonschema.NewCompiler()
	schema, err := jsonschema.UnmarshalJSON(bytes.NewReader(report.Schema))
	if err != nil {
		return err
	}
	if err := c.AddResource("report.schema.json", schema); err != nil {
		return err
	}
	sch, err := c.Compile("report.schema.json")
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	return sch.Validate(inst)
}
