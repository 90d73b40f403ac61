package main

import (
	"bytes"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestBenchtable(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "benchtable")
}

// twoRounds is benchmark output as two interleaved rounds write it.
const twoRounds = `goos: linux
goarch: amd64
pkg: github.com/gracefulfd/graceful/graceful
cpu: AMD EPYC
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=floor-2    	 100	 10000 ns/op	 112 B/op	 1 allocs/op
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=graceful-2 	 100	 12000 ns/op	 900 B/op	 9 allocs/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=floor-2    	 100	 100000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=graceful-2 	 100	 140000 ns/op
PASS
pkg: github.com/gracefulfd/graceful/bench
BenchmarkHandoff/impl=exec-2      	 10	 2000000 ns/op
BenchmarkHandoff/impl=graceful-2  	 10	 2300000 ns/op
BenchmarkHandoff/impl=tableflip-2 	 10	 3000000 ns/op
BenchmarkHandoffPaired-2 	 10	 2000000 exec-ns/op	 2100000 graceful-ns/op	 1.05 graceful/exec	 1.1 graceful/tableflip	 1900000 tableflip-ns/op
BenchmarkUnderLoad/impl=baseline-2 	 1	 0 failed/run	 2.0 p99-ms	 800 requests/run
BenchmarkUnderLoad/impl=graceful-2 	 1	 0 failed/run	 3.0 p99-ms	 800 requests/run
pkg: github.com/gracefulfd/graceful/graceful
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=floor-2    	 100	 20000 ns/op	 112 B/op	 1 allocs/op
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=graceful-2 	 100	 22000 ns/op	 900 B/op	 9 allocs/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=floor-2    	 100	 100000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=graceful-2 	 100	 120000 ns/op
pkg: github.com/gracefulfd/graceful/bench
BenchmarkHandoff/impl=exec-2      	 10	 2000000 ns/op
BenchmarkHandoff/impl=graceful-2  	 10	 2200000 ns/op
BenchmarkHandoff/impl=tableflip-2 	 10	 3000000 ns/op
BenchmarkHandoffPaired-2 	 10	 2000000 exec-ns/op	 2140000 graceful-ns/op	 1.07 graceful/exec	 1.2 graceful/tableflip	 1800000 tableflip-ns/op
BenchmarkUnderLoad/impl=baseline-2 	 1	 0 failed/run	 2.0 p99-ms	 800 requests/run
BenchmarkUnderLoad/impl=graceful-2 	 1	 2 failed/run	 3.0 p99-ms	 800 requests/run
`

var _ = Describe("parse", func() {
	It("splits names into family, case and implementation, one value per round", func() {
		res, err := parse(strings.NewReader(twoRounds))
		Expect(err).NotTo(HaveOccurred())
		s := res.get(libPkg, "Transfer", "proc=2/mode=conn/fds=1", "graceful", "sec/op")
		Expect(s).NotTo(BeNil())
		Expect(s.vals).To(HaveExactElements(BeNumerically("~", 12e-6, 1e-12), BeNumerically("~", 22e-6, 1e-12)))
		Expect(res.get(libPkg, "Transfer", "proc=2/mode=conn/fds=1", "graceful", "allocs/op").vals).To(Equal([]float64{9, 9}))
		Expect(res.get(benchPkg, "UnderLoad", "", "graceful", "failed/run").vals).To(Equal([]float64{0, 2}))
		Expect(res.rounds()).To(Equal(2))
	})

	It("keeps the two packages' benchmarks of the same name apart", func() {
		res, err := parse(strings.NewReader(twoRounds))
		Expect(err).NotTo(HaveOccurred())
		Expect(res.get(benchPkg, "Transfer", "proc=2/mode=conn/fds=1", "graceful", "sec/op")).To(BeNil())
		cases, impls := res.cases(libPkg, "Transfer", "sec/op")
		Expect(cases).To(Equal([]string{"proc=2/mode=conn/fds=1", "proc=2/mode=dial/fds=1000"}))
		Expect(impls).To(Equal([]string{"floor", "graceful"}))
	})
})

var _ = Describe("ratioOf", func() {
	It("divides the medians and reports the range of the per-round ratios", func() {
		a := &series{vals: []float64{12, 22}}
		ref := &series{vals: []float64{10, 20}}
		r := ratioOf(a, ref)
		Expect(r.ok).To(BeTrue())
		Expect(r.ofMedians).To(BeNumerically("~", 17.0/15.0, 1e-9))
		Expect(r.lo).To(BeNumerically("~", 1.1, 1e-9))
		Expect(r.hi).To(BeNumerically("~", 1.2, 1e-9))
		Expect(r.String()).To(Equal("1.13x (1.10–1.20)"))
	})

	It("says so when either side is missing", func() {
		Expect(ratioOf(nil, &series{vals: []float64{1}}).ok).To(BeFalse())
		Expect(ratioOf(&series{vals: []float64{1}}, nil).String()).To(Equal("–"))
	})
})

var _ = Describe("checkTargets", func() {
	It("passes and fails each target on the ratios of the run", func() {
		res, err := parse(strings.NewReader(twoRounds))
		Expect(err).NotTo(HaveOccurred())
		got := map[string]bool{}
		for _, t := range checkTargets(res) {
			got[t.what] = t.pass
		}
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=conn/fds=1: graceful ≤ 1.25x"), true))    // 17/15
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=dial/fds=1: graceful ≤ 1.25x"), false))   // not measured
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=dial/fds=1000: graceful ≤ 1.3x"), true))  // 1.3x
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=conn/fds=1000: graceful ≤ 1.3x"), false)) // not measured
		// The hand-off targets use the paired ratios (1.06, 1.15), not the
		// separate runs' (1.125, 0.75).
		Expect(got).To(HaveKeyWithValue(ContainSubstring("≤ 1.05x exec"), false))
		Expect(got).To(HaveKeyWithValue(ContainSubstring("faster than tableflip"), false))
		Expect(got).To(HaveKeyWithValue(ContainSubstring("0 failed"), false)) // 2 failed in round 2
	})
})

var _ = Describe("report", func() {
	It("names the command, the machine and every section, and marks what was not measured", func() {
		res, err := parse(strings.NewReader(twoRounds))
		Expect(err).NotTo(HaveOccurred())
		var md bytes.Buffer
		report(&md, res, reportInfo{
			command: "cd bench && go run ./cmd/benchtable", machine: "test machine", date: "today",
			rounds: res.rounds(), raw: "results.txt", stat: func(string) string { return "stat\n" },
		})
		out := md.String()
		Expect(out).To(ContainSubstring("`cd bench && go run ./cmd/benchtable`"))
		Expect(out).To(ContainSubstring("test machine"))
		Expect(out).To(ContainSubstring("| proc=2/mode=conn/fds=1 | 15µs, 1 allocs | 17µs, 9 allocs | 1.13x (1.10–1.20) |"))
		Expect(out).To(ContainSubstring("## Conversion: 1000 received listeners into net.Listener\n\n(not measured in this run)"))
		Expect(out).To(ContainSubstring("| graceful | 1600 | 2 |"))
		Expect(out).To(ContainSubstring("| 2ms | 2.12ms | 1.85ms | 1.06x (1.05–1.07) | 1.15x (1.10–1.20) |"))
	})
})
