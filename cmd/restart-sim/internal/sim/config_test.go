//go:build linux

package sim

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

var _ = Describe("the flags", func() {
	It("have defaults for a run of about a minute with every load", func() {
		var out bytes.Buffer
		cfg, err := Parse(nil, &out)
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg).To(Equal(DefaultConfig()))
		Expect(cfg.Loads).To(Equal([]string{"http", "keepalive", "stream", "udp", "file"}))
		total := warmup(cfg) + cfg.Baseline + time.Duration(cfg.Restarts)*cfg.Interval + tail
		Expect(total).To(BeNumerically("~", time.Minute, 15*time.Second))
		Expect(out.String()).To(BeEmpty())
	})

	It("read every setting", func() {
		cfg, err := Parse(strings.Fields("-restarts 7 -interval 50ms -baseline 2s -concurrency 3 -rate 0 "+
			"-loads udp,stream -faults kill,crash,kill -ready-timeout 1s -timeout 3s -json r.json -chart c.svg -verbose "+
			"-latency-target 1.5 -fail-on-latency -progress 2s -defect udp-drop"), new(bytes.Buffer))
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg).To(Equal(Config{
			Restarts: 7, Interval: 50 * time.Millisecond, Baseline: 2 * time.Second, Concurrency: 3, Rate: 0,
			Loads: []string{"udp", "stream"}, Faults: []string{"kill", "crash", "kill"},
			ReadyTimeout: time.Second, RequestTimeout: 3 * time.Second, StepTimeout: DefaultStepTimeout,
			JSON: "r.json", Chart: "c.svg", Verbose: true,
			LatencyTarget: 1.5, FailOnLatency: true, Progress: 2 * time.Second, Defect: "udp-drop",
			CrashSafety: true, HTTPStatus: 200,
		}))
	})

	It("take a service of the user's after --", func() {
		cfg, err := Parse(strings.Fields("-restarts 3 -http http://127.0.0.1:8080/health -http-status 204 -tcp 127.0.0.1:7 "+
			"-udp 127.0.0.1:7 -faults sigkill,panic -crash-safety=false -handoff /run/app.sock -- ./server -addr :8080 --verbose"), new(bytes.Buffer))
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Command).To(Equal([]string{"./server", "-addr", ":8080", "--verbose"}))
		Expect(cfg.HTTPURL).To(Equal("http://127.0.0.1:8080/health"))
		Expect(cfg.HTTPStatus).To(Equal(204))
		Expect([]string{cfg.TCPAddr, cfg.UDPAddr, cfg.Handoff}).To(Equal([]string{"127.0.0.1:7", "127.0.0.1:7", "/run/app.sock"}))
		Expect(cfg.Loads).To(Equal([]string{"http", "keepalive", "tcp", "udp"}))
		Expect(cfg.Faults).To(Equal([]string{"sigkill", "panic"}))
		Expect(cfg.CrashSafety).To(BeFalse())
		Expect(cfg.ReadyTimeout).To(Equal(DefaultUserReadyTimeout), "a program of the user's may start slower than the demo")
		Expect(cfg.demo()).To(BeFalse())
	})

	It("turn -duration into restarts", func() {
		cfg, err := Parse(strings.Fields("-duration 10s -interval 250ms"), new(bytes.Buffer))
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Restarts).To(Equal(40))
	})

	It("print the usage for -h", func() {
		var out bytes.Buffer
		_, err := Parse([]string{"-h"}, &out)
		Expect(errors.Is(err, flag.ErrHelp)).To(BeTrue())
		Expect(out.String()).To(ContainSubstring("Usage: restart-sim"))
		Expect(out.String()).To(ContainSubstring("-restarts"))
	})

	DescribeTable("refuse bad values with a clear message",
		func(args, message string) {
			var out bytes.Buffer
			_, err := Parse(strings.Fields(args), &out)
			Expect(err).To(MatchError(ErrUsage))
			Expect(err.Error()).To(ContainSubstring(message))
			Expect(out.String()).To(ContainSubstring(message))
		},
		Entry("an unknown flag", "-restart 3", "flag provided but not defined: -restart"),
		Entry("a value that is not a number", "-restarts many", `invalid value "many" for flag -restarts`),
		Entry("a stray argument", "fast", `unexpected argument "fast" (a command goes after --)`),
		Entry("a command with nothing to drive", "-- ./server", "with a command, name what to drive: -http URL, -tcp ADDR or -udp ADDR"),
		Entry("-http without a command", "-http http://127.0.0.1/", "-http is for your service: name it after --"),
		Entry("a URL off loopback", "-http http://192.0.2.1/ -- ./server", `-http: load: target is not a loopback address: "192.0.2.1:80"`),
		Entry("a URL that is not http", "-http https://127.0.0.1/ -- ./server", `-http: load: "https://127.0.0.1/" is not an http:// URL`),
		Entry("a TCP address off loopback", "-tcp 192.0.2.1:7 -- ./server", `-tcp: load: target is not a loopback address: "192.0.2.1:7"`),
		Entry("-loads with a command", "-loads http -tcp 127.0.0.1:7 -- ./server", "-loads is for the demo service, not with a command"),
		Entry("a hand-off fault with a command", "-faults hang -tcp 127.0.0.1:7 -- ./server",
			"-faults hang: only the demo service can be told to fail its hand-off; for your service: sigkill, panic"),
		Entry("negative restarts", "-restarts -1", "-restarts must be between 0 and"),
		Entry("restarts and duration", "-restarts 3 -duration 1s", "-restarts and -duration both set"),
		Entry("a duration shorter than the interval", "-duration 100ms", "-duration must be at least one -interval"),
		Entry("a tiny interval", "-interval 1ms", "-interval must be at least 10ms, got 1ms"),
		Entry("a tiny baseline", "-baseline 0s", "-baseline must be at least 100ms"),
		Entry("no clients", "-concurrency 0", "-concurrency must be between 1 and 64, got 0"),
		Entry("too many clients", "-concurrency 1000", "-concurrency must be between 1 and 64"),
		Entry("a negative rate", "-rate -5", "-rate must be between 0 and"),
		Entry("a tiny ready timeout", "-ready-timeout 1ms", "-ready-timeout and -timeout must be at least 100ms"),
		Entry("an unknown load", "-loads http,ftp", `-loads: unknown "ftp"; choose among http, keepalive, stream, udp, file`),
		Entry("a load twice", "-loads udp,udp", `-loads: "udp" given twice`),
		Entry("no load", "-loads ,", "-loads names no load"),
		Entry("an unknown fault", "-faults crash,explode", `-faults: unknown "explode"; choose among crash, hang, kill, sigkill, panic`),
		Entry("faults without restarts", "-restarts 0 -faults crash", "-faults needs at least one restart"),
		Entry("a chart format", "-chart latency.gif", "the file name must end in .svg, .png or .pdf"),
		Entry("a latency target below 1", "-latency-target 0.9", "-latency-target must be at least 1, got 0.9"),
		Entry("a negative progress interval", "-progress -1s", "-progress must not be negative"),
		Entry("an unknown defect", "-defect typo", `-defect: unknown "typo"; choose among http-wrong,`),
		Entry("a request timeout a hung successor would exceed", "-faults hang -ready-timeout 2s -timeout 2s",
			"-timeout (2s) must be at least -ready-timeout (2s) + 1s with the hang fault"),
	)
})

var _ = Describe("the restart schedule", func() {
	It("spreads the faults evenly among the restarts", func() {
		Expect(schedule(3, nil)).To(Equal([]string{"", "", ""}))
		Expect(schedule(6, []string{"crash", "hang", "kill"})).To(Equal(
			[]string{"", "", "crash", "", "hang", "", "kill", "", ""}))
		Expect(schedule(1, []string{"kill"})).To(Equal([]string{"", "kill"}))
	})

	It("never starts with a fault when there is a restart before it to make", func() {
		Expect(schedule(2, []string{"crash", "hang", "kill"})[0]).To(Equal(""))
	})
})

var _ = Describe("what a crash counts", func() {
	It("includes a failure on a connection the crashed generation held, when its client next uses it after the successor is ready", func() {
		ms := time.Millisecond
		r := &runner{cfg: Config{Rate: 50}} // a request every 20 ms per client
		r.windows = []window{r.crashWindow(100*ms, 102*ms)}
		t := r.duringCrashes([]report.Sample{
			{At: 90 * ms, Latency: 20 * ms, Outcome: report.EOF}, // in flight at the crash
			{At: 118 * ms, Latency: ms, Outcome: report.EOF},     // the dead connection's next use
			{At: 150 * ms, Latency: ms, Outcome: report.Refused}, // well after: not the crash's
		}, nil)
		Expect(t.Failed).To(Equal(int64(2)))
		Expect(t.FailedBy).To(Equal(map[string]int64{"eof": 2}))
	})
})
