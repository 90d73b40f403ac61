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
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=floor-ack-2    	 100	 11000 ns/op	 112 B/op	 1 allocs/op
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=graceful-2 	 100	 12000 ns/op	 900 B/op	 9 allocs/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=floor-2    	 100	 100000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=floor-ack-2    	 100	 110000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=graceful-2 	 100	 140000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=graceful-base-2 	 100	 130000 ns/op
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
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=floor-ack-2    	 100	 21000 ns/op	 112 B/op	 1 allocs/op
BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=graceful-2 	 100	 22000 ns/op	 900 B/op	 9 allocs/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=floor-2    	 100	 100000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=floor-ack-2    	 100	 110000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=graceful-2 	 100	 120000 ns/op
BenchmarkTransfer/proc=2/mode=dial/fds=1000/impl=graceful-base-2 	 100	 130000 ns/op
pkg: github.com/gracefulfd/graceful/bench
BenchmarkHandoff/impl=exec-2      	 10	 2000000 ns/op
BenchmarkHandoff/impl=graceful-2  	 10	 2200000 ns/op
BenchmarkHandoff/impl=tableflip-2 	 10	 3000000 ns/op
BenchmarkHandoffPaired-2 	 10	 2000000 exec-ns/op	 2140000 graceful-ns/op	 1.07 graceful/exec	 1.2 graceful/tableflip	 1800000 tableflip-ns/op
BenchmarkSupervisorPaired-2 	 20	 0 ns/op	 4000000 direct-ns/op	 4100000 restart-ns/op	 4800000 crash-ns/op	 1.03 restart/direct	 1.2 crash/direct	 4400000 recovery-ns/op	 1.1 recovery/direct	 2400000 spare-ns/op	 0.6 spare/direct
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
		Expect(impls).To(Equal([]string{"floor", "floor-ack", "graceful", "graceful-base"}))
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
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=conn/fds=1: graceful ≤ 1.1x floor-ack"), true))     // 17/16
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=conn/fds=1000: graceful ≤ 1.1x floor-ack"), false)) // not measured
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=dial/fds=1000: graceful ≤ 1.1x floor-ack"), false)) // 130/110
		Expect(got).To(HaveKeyWithValue(ContainSubstring("proc=2/mode=dial/fds=1000: hardening ≤ 1.05x"), true))          // 130/130
		Expect(got).To(HaveKeyWithValue(ContainSubstring("hand-off: hardening"), false))                                  // not measured
		Expect(got).To(HaveKeyWithValue(ContainSubstring("restart through the supervisor"), true))                        // 1.03
		Expect(got).To(HaveKeyWithValue(ContainSubstring("crash recovery with a spare"), true))                           // 0.6
		Expect(got).To(HaveKeyWithValue(ContainSubstring("crash recovery without a spare ≤"), false))                     // 1.2
		Expect(got).To(HaveKeyWithValue(ContainSubstring("crash recovery without a spare, after the death"), true))       // 1.1
		Expect(got).To(HaveKeyWithValue(ContainSubstring("0 failed"), false))                                             // 2 failed in round 2
	})
})

var _ = Describe("baseName", func() {
	It("renames only the baseline's graceful rows", func() {
		in := "BenchmarkHandoff/impl=graceful-2  \t 10\t 2 ns/op\nBenchmarkHandoff/impl=exec-2 \t 10\t 1 ns/op\n"
		Expect(string(baseName.ReplaceAll([]byte(in), []byte("/impl=graceful-base$1")))).To(Equal(
			"BenchmarkHandoff/impl=graceful-base-2  \t 10\t 2 ns/op\nBenchmarkHandoff/impl=exec-2 \t 10\t 1 ns/op\n"))
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
		Expect(out).To(ContainSubstring("| case | floor | floor-ack | floor-ack / floor | graceful | graceful / floor | graceful / floor-ack | graceful / graceful-base | graceful-base | graceful-base / floor | graceful-base / floor-ack |"))
		Expect(out).To(ContainSubstring("| proc=2/mode=conn/fds=1 | 15µs, 1 allocs | 16µs, 1 allocs | 1.07x (1.05–1.10) | 17µs, 9 allocs | 1.13x (1.10–1.20) | 1.06x (1.05–1.09) | – | – | – | – |"))
		Expect(out).To(ContainSubstring("| 4ms | 4.1ms | 4.8ms | 4.4ms | 2.4ms | 1.03x | 1.20x | 1.10x | 0.60x |"))
		Expect(out).To(ContainSubstring("## Conversion: 1000 received listeners into net.Listener\n\n(not measured in this run)"))
		Expect(out).To(ContainSubstring("| graceful | 1600 | 2 |"))
		Expect(out).To(ContainSubstring("| 2ms | 2.12ms | 1.85ms | 1.06x (1.05–1.07) | 1.15x (1.10–1.20) |"))
	})

	It("compares with net-ack, where it was measured, as a floor of its own", func() {
		withNet := twoRounds
		for _, ns := range []string{"12000", "22000"} { // before graceful's row in each round
			row := "BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=graceful-2 \t 100\t " + ns
			withNet = strings.Replace(withNet, row, "BenchmarkTransfer/proc=2/mode=conn/fds=1/impl=net-ack-2 \t 100\t 11000 ns/op\t 0 B/op\t 0 allocs/op\n"+row, 1)
		}
		res, err := parse(strings.NewReader(withNet))
		Expect(err).NotTo(HaveOccurred())
		var md bytes.Buffer
		report(&md, res, reportInfo{rounds: res.rounds(), stat: func(string) string { return "" }})
		Expect(md.String()).To(ContainSubstring("| net-ack | net-ack / floor | net-ack / floor-ack | graceful | graceful / floor | graceful / floor-ack | graceful / net-ack | graceful / graceful-base |"))
		// net-ack 11µs in both rounds; graceful 12µs and 22µs.
		Expect(md.String()).To(ContainSubstring("| 11µs, 0 allocs | 0.73x (0.55–1.10) | 0.69x (0.52–1.00) | 17µs, 9 allocs | 1.13x (1.10–1.20) | 1.06x (1.05–1.09) | 1.55x (1.09–2.00) |"))
	})
})
