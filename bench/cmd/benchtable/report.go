package main

import (
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/perf/benchmath"
)

// series is the values of one benchmark of one implementation, one per
// round, in round order.
type series struct {
	pkg, family, cas, impl, unit string
	vals                         []float64
}

// results indexes every series by its key.
type results struct {
	byKey map[string]*series
	order []string // keys in order of first appearance
}

func key(pkg, family, cas, impl, unit string) string {
	return strings.Join([]string{pkg, family, cas, impl, unit}, "\x00")
}

func (r *results) get(pkg, family, cas, impl, unit string) *series {
	return r.byKey[key(pkg, family, cas, impl, unit)]
}

// cases lists the cases of a family in order of appearance, and impls its
// implementations.
func (r *results) cases(pkg, family, unit string) (cases, impls []string) {
	for _, k := range r.order {
		s := r.byKey[k]
		if s.pkg == pkg && s.family == family && s.unit == unit {
			if !slices.Contains(cases, s.cas) {
				cases = append(cases, s.cas)
			}
			if !slices.Contains(impls, s.impl) {
				impls = append(impls, s.impl)
			}
		}
	}
	return cases, impls
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parse reads benchmark output. A name such as
// BenchmarkTransfer/mode=dial/fds=1/impl=floor-2 is family
// BenchmarkTransfer, case mode=dial/fds=1, implementation floor.
func parse(in io.Reader) (*results, error) {
	res := &results{byKey: map[string]*series{}}
	rd := benchfmt.NewReader(in, "results.txt")
	for rd.Scan() {
		r, ok := rd.Result().(*benchfmt.Result)
		if !ok {
			continue
		}
		name := procsSuffix.ReplaceAllString(r.Name.String(), "")
		parts := strings.Split(name, "/")
		family, impl := parts[0], ""
		var cas []string
		for _, p := range parts[1:] {
			if v, ok := strings.CutPrefix(p, "impl="); ok {
				impl = v
			} else {
				cas = append(cas, p)
			}
		}
		pkg := r.GetConfig("pkg")
		for _, v := range r.Values {
			k := key(pkg, family, strings.Join(cas, "/"), impl, v.Unit)
			s := res.byKey[k]
			if s == nil {
				s = &series{pkg: pkg, family: family, cas: strings.Join(cas, "/"), impl: impl, unit: v.Unit}
				res.byKey[k] = s
				res.order = append(res.order, k)
			}
			s.vals = append(s.vals, v.Value)
		}
	}
	return res, rd.Err()
}

// rounds is the most values any series has: the number of rounds run.
func (r *results) rounds() int {
	n := 0
	for _, s := range r.byKey {
		n = max(n, len(s.vals))
	}
	return n
}

// summary is the median with its 95% confidence interval.
func summary(vals []float64) benchmath.Summary {
	s := benchmath.NewSample(slices.Clone(vals), &benchmath.DefaultThresholds)
	return benchmath.AssumeNothing.Summary(s, 0.95)
}

func median(vals []float64) float64 { return summary(vals).Center }

// ratio compares a with ref: the ratio of their medians, and the range of
// the ratios within each round.
type ratio struct {
	ofMedians float64
	lo, hi    float64
	ok        bool
}

func ratioOf(a, ref *series) ratio {
	if a == nil || ref == nil || len(a.vals) == 0 || len(ref.vals) == 0 || median(ref.vals) == 0 {
		return ratio{}
	}
	r := ratio{ofMedians: median(a.vals) / median(ref.vals), lo: math.Inf(1), hi: math.Inf(-1), ok: true}
	for i := range min(len(a.vals), len(ref.vals)) {
		if ref.vals[i] > 0 {
			x := a.vals[i] / ref.vals[i]
			r.lo, r.hi = min(r.lo, x), max(r.hi, x)
		}
	}
	return r
}

func (r ratio) String() string {
	if !r.ok {
		return "–"
	}
	if len := r.hi - r.lo; math.IsInf(len, 0) || r.lo == r.hi {
		return fmt.Sprintf("%.2fx", r.ofMedians)
	}
	return fmt.Sprintf("%.2fx (%.2f–%.2f)", r.ofMedians, r.lo, r.hi)
}

// formatValue prints a median in the unit's natural scale, with the
// confidence interval as ± percent when there are enough rounds.
func formatValue(s *series) string {
	if s == nil || len(s.vals) == 0 {
		return "–"
	}
	sum := summary(s.vals)
	v := scaled(sum.Center, s.unit)
	if len(s.vals) < 6 || sum.Center == 0 || math.IsInf(sum.Lo, 0) || math.IsInf(sum.Hi, 0) {
		return v
	}
	pct := 100 * max(sum.Center-sum.Lo, sum.Hi-sum.Center) / sum.Center
	return fmt.Sprintf("%s ±%.0f%%", v, pct)
}

func scaled(v float64, unit string) string {
	switch unit {
	case "sec/op":
		return time.Duration(v * 1e9).Round(time.Duration(sig(v * 1e9))).String()
	case "B/op":
		return fmt.Sprintf("%.0f B", v)
	case "allocs/op":
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// sig rounds a nanosecond count to three significant figures.
func sig(ns float64) float64 {
	if ns < 1000 {
		return 1
	}
	return math.Pow(10, math.Floor(math.Log10(ns))-2)
}

type reportInfo struct {
	command, machine, date, raw string
	elapsed                     time.Duration
	rounds                      int
	cfg                         config
	stat                        func(filter string) string // benchstat's text for the results filter selects
}

const (
	libPkg   = "github.com/gracefulfd/graceful/graceful"
	benchPkg = "github.com/gracefulfd/graceful/bench"
)

// target is one of the goals of issue 6, checked against this run.
type target struct {
	what     string
	measured string
	pass     bool
}

func report(w io.Writer, res *results, info reportInfo) {
	fmt.Fprintf(w, "# Benchmark results\n\n")
	fmt.Fprintf(w, "Generated by `%s` on %s.\n\n", info.command, info.date)
	fmt.Fprintf(w, "- Machine: %s.\n", info.machine)
	fmt.Fprintf(w, "- %d interleaved rounds (every benchmark once per round)", info.rounds)
	if info.elapsed > 0 {
		fmt.Fprintf(w, ", %v in all; transfer and hand-off `-benchtime %s`, conversion `%s`, %d restarts per under-load run",
			info.elapsed, info.cfg.benchtime, info.cfg.convert, info.cfg.restarts)
	}
	fmt.Fprintf(w, ".\n")
	fmt.Fprintf(w, "- Cells are medians with their 95%% confidence interval (benchstat's); ratios are ratios of medians, with the range of the per-round ratios in parentheses.\n")
	fmt.Fprintf(w, "- Absolute times on this shared two-core virtual machine drift from run to run; compare within one run, as ratios.\n")
	fmt.Fprintf(w, "- Raw output: `%s` (feed it to benchstat). Where graceful falls short, what costs what and what would fix it: [ANALYSIS.md](ANALYSIS.md).\n\n", info.raw)

	targets := checkTargets(res)
	fmt.Fprintf(w, "## Targets\n\n| target | measured | met |\n| --- | --- | --- |\n")
	for _, t := range targets {
		met := "no"
		if t.pass {
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.what, t.measured, met)
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "## Transfer: `go test -bench Transfer ./graceful/`\n\n")
	fmt.Fprintf(w, "One request for the sender's whole set until every descriptor is in hand (and closed). Two floors, both golang.org/x/sys/unix on blocking sockets with no framing (internal/floor): floor has no acknowledgement; floor-ack has the protocol's message pattern (request, set, a one-byte acknowledgement the sender waits for), so it pays the same wake-ups. net-ack is floor-ack's messages through package net (Go's poller; by dialling, a net.UnixListener with a goroutine per connection, the accept path a graceful.Server has): net-ack / floor-ack is what package net costs, graceful / net-ack what the protocol and the library cost on top of it. graceful-base, where present, is the library of an earlier commit (`-baseline`), measured in the same rounds. mode=conn: requests on one open connection (graceful.ReceiveFrom against Server.ServeConn with ReadyTimeout < 0: HELLO, the set, ACK); mode=dial: a new connection per request (graceful.Receive, which retries a BUSY server by itself, against a graceful.Server; busy-retries/op counts those retries). proc=1: sender in the same process; proc=2: sender in another process.\n\n")
	ratioTable(w, res, libPkg, "Transfer", "sec/op", true, "floor", "floor-ack", "net-ack", "graceful-base")
	details(w, info, "pkg:"+libPkg+" .name:Transfer")

	fmt.Fprintf(w, "## Transfer with peers, across two processes: `bench/` BenchmarkTransfer\n\n")
	fmt.Fprintf(w, "net: the floor's messages through package net (Go's poller) instead of blocking system calls. ftrvxmtrx-fd: github.com/ftrvxmtrx/fd Put/Get in batches of 252 (its Get returns *os.File values, closed one by one). graceful in mode=conn: Server.ServeConn and ReceiveFrom on the open connection. protocol-blocking-both is a prototype (bench/internal/blocking, built on graceful/wire): the same protocol with blocking system calls and SO_RCVTIMEO/SO_SNDTIMEO deadlines on both sides and a sender that serves one connection at a time from a blocking accept loop: the protocol without package net, Go's poller or a goroutine per connection, waiting the way the library did before it waited in poll.\n\n")
	ratioTable(w, res, benchPkg, "Transfer", "sec/op", true, "floor")
	details(w, info, "pkg:"+benchPkg+" .name:Transfer")

	fmt.Fprintf(w, "## Conversion: 1000 received listeners into net.Listener\n\n")
	ratioTable(w, res, benchPkg, "Convert", "sec/op", true, "net.FileListener")
	details(w, info, "pkg:"+benchPkg+" .name:Convert")

	fmt.Fprintf(w, "## Hand-off to a new process\n\n")
	fmt.Fprintf(w, "From starting the new process to the old one knowing it holds a net.Listener: exec inheritance (ExtraFiles, then a byte on a pipe), graceful (Receive and READY against a graceful.Server), and one cloudflare/tableflip v1.2.3 Upgrade call (timed by the old process).\n\n")
	ratioTable(w, res, benchPkg, "Handoff", "sec/op", false, "exec", "graceful-base")
	details(w, info, "pkg:"+benchPkg+" .name:Handoff")
	fmt.Fprintf(w, "The same three, run in turn within every iteration (HandoffPaired), so that a burst of load hits all three alike; the ratios are of each round's means:\n\n")
	pairedTable(w, res)
	details(w, info, "pkg:"+benchPkg+" .name:HandoffPaired")

	fmt.Fprintf(w, "## The supervisor: restart and crash recovery\n\n")
	fmt.Fprintf(w, "BenchmarkSupervisorPaired (bench/supervisor_test.go): a direct hand-off (a graceful.Server offers a TCP listener and starts the generation program, which takes it and says so), a restart through the supervisor's engine (the next generation takes the listener from the serving one and says READY=1), crash recovery (SIGKILL to the serving generation until its successor, handed the stored listener by the supervisor, says READY=1; and the part of it after the supervisor learned of the death, since the kernel reports a killed process only once it has torn it down), and the same crash recovery with a spare (Config.Spare: the successor was started in advance and waits in graceful.Receive), run in turn within each iteration; ratios are of each round's means.\n\n")
	supervisorTable(w, res)
	details(w, info, "pkg:"+benchPkg+" .name:SupervisorPaired")

	fmt.Fprintf(w, "## Restarts under load\n\n")
	fmt.Fprintf(w, "cmd/restart-sim's default load and schedule: 4 clients, 200 requests a second each, a new connection per request, a restart every 200 ms; one run per round. baseline: the graceful demo without restarts. tableflip-shutdown drains with http.Server.Shutdown (tableflip's example); tableflip-drainer with graceful.HTTPDrainer. failed and refused are totals over all rounds; latencies are medians over rounds.\n\n")
	underLoadTable(w, res)
	details(w, info, "pkg:"+benchPkg+" .name:UnderLoad")
}

// details adds benchstat's own table for the results filter selects.
func details(w io.Writer, info reportInfo, filter string) {
	fmt.Fprintf(w, "<details><summary>benchstat -col /impl -filter '%s' %s</summary>\n\n```\n%s```\n\n</details>\n\n",
		filter, info.raw, info.stat(filter))
}

// ratioTable prints one row per case: each implementation's median, and
// its ratio to each of refs that ran: every implementation against every
// reference, a reference only against the references before it.
func ratioTable(w io.Writer, res *results, pkg, family, unit string, allocs bool, refs ...string) {
	cases, impls := res.cases(pkg, family, unit)
	if len(cases) == 0 {
		fmt.Fprintf(w, "(not measured in this run)\n\n")
		return
	}
	var present []string
	for _, ref := range refs {
		if slices.Contains(impls, ref) {
			present = append(present, ref)
		}
	}
	refsOf := func(impl string) []string {
		if i := slices.Index(present, impl); i >= 0 {
			return present[:i]
		}
		return present
	}
	fmt.Fprintf(w, "| case |")
	for _, impl := range impls {
		fmt.Fprintf(w, " %s |", impl)
		for _, ref := range refsOf(impl) {
			fmt.Fprintf(w, " %s / %s |", impl, ref)
		}
	}
	fmt.Fprintf(w, "\n| --- |")
	for _, impl := range impls {
		fmt.Fprintf(w, " ---: |%s", strings.Repeat(" ---: |", len(refsOf(impl))))
	}
	fmt.Fprintln(w)
	for _, c := range cases {
		label := c
		if label == "" {
			label = "–"
		}
		fmt.Fprintf(w, "| %s |", label)
		for _, impl := range impls {
			s := res.get(pkg, family, c, impl, unit)
			cell := formatValue(s)
			if a := res.get(pkg, family, c, impl, "allocs/op"); allocs && a != nil {
				cell += fmt.Sprintf(", %s allocs", scaled(median(a.vals), "allocs/op"))
			}
			fmt.Fprintf(w, " %s |", cell)
			for _, ref := range refsOf(impl) {
				fmt.Fprintf(w, " %s |", ratioOf(s, res.get(pkg, family, c, ref, unit)))
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// supervisorTable shows BenchmarkSupervisorPaired's metrics: each
// operation's median over rounds, and the ratios measured within each
// round.
func supervisorTable(w io.Writer, res *results) {
	get := func(unit string) *series { return res.get(benchPkg, "SupervisorPaired", "", "", unit) }
	if get("restart/direct") == nil {
		fmt.Fprintf(w, "(not measured in this run)\n\n")
		return
	}
	fmt.Fprintf(w, "| direct hand-off | restart through the supervisor | crash recovery | of which after the death was reported | crash recovery with a spare | restart / direct | crash / direct | after the death / direct | with a spare / direct |\n")
	fmt.Fprintf(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n\n",
		secCell(get("direct-sec/op")), secCell(get("restart-sec/op")), secCell(get("crash-sec/op")), secCell(get("recovery-sec/op")), secCell(get("spare-sec/op")),
		metricRatio(get("restart/direct")), metricRatio(get("crash/direct")), metricRatio(get("recovery/direct")), metricRatio(get("spare/direct")))
}

// pairedTable shows BenchmarkHandoffPaired's metrics: medians over
// rounds, with the range of the rounds for the ratios. (benchfmt tidies
// the benchmark's "-ns/op" units into "-sec/op".)
func pairedTable(w io.Writer, res *results) {
	get := func(unit string) *series { return res.get(benchPkg, "HandoffPaired", "", "", unit) }
	if get("graceful/exec") == nil {
		fmt.Fprintf(w, "(not measured in this run)\n\n")
		return
	}
	fmt.Fprintf(w, "| exec | graceful | tableflip | graceful / exec | graceful / tableflip |\n")
	fmt.Fprintf(w, "| ---: | ---: | ---: | ---: | ---: |\n")
	fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n\n",
		secCell(get("exec-sec/op")), secCell(get("graceful-sec/op")), secCell(get("tableflip-sec/op")),
		metricRatio(get("graceful/exec")), metricRatio(get("graceful/tableflip")))
}

// secCell prints a custom seconds-per-operation metric as a duration.
func secCell(s *series) string {
	if s == nil {
		return "–"
	}
	return formatValue(&series{unit: "sec/op", vals: s.vals})
}

// metricRatio is a ratio measured within each round: its median over
// rounds, and its range.
func metricRatio(s *series) ratio {
	if s == nil || len(s.vals) == 0 {
		return ratio{}
	}
	return ratio{ofMedians: median(s.vals), lo: slices.Min(s.vals), hi: slices.Max(s.vals), ok: true}
}

func underLoadTable(w io.Writer, res *results) {
	const family = "UnderLoad"
	_, impls := res.cases(benchPkg, family, "failed/run")
	if len(impls) == 0 {
		fmt.Fprintf(w, "(not measured in this run)\n\n")
		return
	}
	get := func(impl, unit string) *series { return res.get(benchPkg, family, "", impl, unit) }
	total := func(s *series) string {
		if s == nil {
			return "–"
		}
		t := 0.0
		for _, v := range s.vals {
			t += v
		}
		return fmt.Sprintf("%.0f", t)
	}
	fmt.Fprintf(w, "| demo | requests | failed | restarts done | restarts refused | p50 | p99 | p99 / baseline |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, impl := range impls {
		p99 := get(impl, "p99-ms")
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s ms | %s ms | %s |\n", impl,
			total(get(impl, "requests/run")), total(get(impl, "failed/run")),
			total(get(impl, "restarts/run")), total(get(impl, "refused/run")),
			formatValue(get(impl, "p50-ms")), formatValue(p99), ratioOf(p99, get("baseline", "p99-ms")))
	}
	fmt.Fprintln(w)
}

// checkTargets evaluates the targets of issues 11 and 13 on this run.
func checkTargets(res *results) []target {
	var ts []target
	add := func(what string, limit float64, r ratio) {
		ts = append(ts, target{what: what, measured: r.String(), pass: r.ok && r.ofMedians <= limit})
	}
	ratioIn := func(pkg, family, cas, impl, ref string) ratio {
		return ratioOf(res.get(pkg, family, cas, impl, "sec/op"), res.get(pkg, family, cas, ref, "sec/op"))
	}
	for _, cas := range []string{"proc=2/mode=conn/fds=1", "proc=2/mode=conn/fds=1000", "proc=2/mode=dial/fds=1000"} {
		add(cas+": graceful ≤ 1.1x floor-ack", 1.1, ratioIn(libPkg, "Transfer", cas, "graceful", "floor-ack"))
	}
	for _, cas := range []string{"proc=2/mode=conn/fds=1000", "proc=2/mode=dial/fds=1000"} {
		add(cas+": hardening ≤ 1.05x graceful-base", 1.05, ratioIn(libPkg, "Transfer", cas, "graceful", "graceful-base"))
	}
	add("hand-off: hardening ≤ 1.05x graceful-base", 1.05, ratioIn(benchPkg, "Handoff", "", "graceful", "graceful-base"))
	sup := func(unit string) ratio { return metricRatio(res.get(benchPkg, "SupervisorPaired", "", "", unit)) }
	add("restart through the supervisor ≤ 1.05x direct hand-off", 1.05, sup("restart/direct"))
	add("crash recovery with a spare (Config.Spare) ≤ 1.1x process start plus hand-off", 1.1, sup("spare/direct"))
	add("crash recovery without a spare ≤ 1.1x process start plus hand-off", 1.1, sup("crash/direct"))
	add("crash recovery without a spare, after the death was reported ≤ 1.1x process start plus hand-off", 1.1, sup("recovery/direct"))
	failed := res.get(benchPkg, "UnderLoad", "", "graceful", "failed/run")
	t := target{what: "under load: 0 failed requests (graceful demo)", measured: "–"}
	if failed != nil {
		sum := 0.0
		for _, v := range failed.vals {
			sum += v
		}
		t.pass = sum == 0
		t.measured = fmt.Sprintf("%.0f failed in %d runs", sum, len(failed.vals))
	}
	ts = append(ts, t)
	return ts
}
