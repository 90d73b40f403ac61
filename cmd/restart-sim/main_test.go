//go:build linux

package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// runTimeout bounds one simulation of these specs (a few seconds each,
// longer under the race detector on a busy machine).
const runTimeout = 90 * time.Second

// start runs restart-sim with args plus -json, and returns the session and
// the path of the JSON report.
func start(args ...string) (*gexec.Session, string) {
	GinkgoHelper()
	jsonPath := filepath.Join(GinkgoT().TempDir(), "report.json")
	cmd := exec.Command(binary, append([]string{"-json", jsonPath}, args...)...)
	session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { session.Kill().Wait(10 * time.Second) })
	return session, jsonPath
}

func validate(doc []byte) error {
	schema, err := jsonschema.UnmarshalJSON(bytes.NewReader(report.Schema))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
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

// freeTCP returns a loopback address, free now, for a service these specs
// start later. Its port is below the kernel's ephemeral range, so no
// outgoing connection and no listener on port 0 (every other spec's) can
// take it in between; only another explicit bind in that range could, at a
// random port of thousands.
func freeTCP() (string, error) {
	low, err := ephemeralLow()
	if err != nil {
		return "", err
	}
	const first = 10000
	if low <= first {
		return "", fmt.Errorf("the ephemeral port range starts at %d, below %d", low, first)
	}
	var last error
	for range 20 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(first+rand.IntN(low-first)))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return addr, nil
		}
		last = err
	}
	return "", fmt.Errorf("no free port below the ephemeral range in 20 tries: %w", last)
}

// ephemeralLow is the first port of the range the kernel gives out on its
// own (net.ipv4.ip_local_port_range).
func ephemeralLow() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, fmt.Errorf("ip_local_port_range: %q", b)
	}
	return strconv.Atoi(fields[0])
}

// childrenOf lists the children of process pid.
func childrenOf(pid int) []int {
	GinkgoHelper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	Expect(err).NotTo(HaveOccurred())
	var pids []int
	for _, f := range files {
		data, err := os.ReadFile(f)
		Expect(err).NotTo(HaveOccurred())
		for _, field := range strings.Fields(string(data)) {
			child, err := strconv.Atoi(field)
			Expect(err).NotTo(HaveOccurred())
			pids = append(pids, child)
		}
	}
	return pids
}

// readReport reads the JSON report at path, checking it against the
// documented schema first.
func readReport(path string) report.Report {
	GinkgoHelper()
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	Expect(validate(data)).To(Succeed())
	var r report.Report
	Expect(json.Unmarshal(data, &r)).To(Succeed())
	return r
}

// expectNothingLost checks every load of r: something sent, nothing
// failed, lost or duplicated.
func expectNothingLost(r report.Report) {
	GinkgoHelper()
	Expect(r.Loads).To(HaveLen(5))
	for _, l := range r.Loads {
		Expect(l.Sent).To(BeNumerically(">", 0), l.Name)
		Expect(l.OK).To(Equal(l.Sent), "%s: %+v", l.Name, l)
		Expect([]int64{l.Failed, l.Lost, l.Duplicated}).To(Equal([]int64{0, 0, 0}), "%s: %+v", l.Name, l)
	}
}

// expectFlatFds checks that every generation that took over holds the same
// number of descriptors, and that every one that drained left the same
// number open.
func expectFlatFds(r report.Report) {
	GinkgoHelper()
	Expect(r.Fds.Flat).To(BeTrue(), "%+v", r.Fds)
	for _, g := range r.Generations {
		if g.Outcome == report.RolledBack {
			continue
		}
		Expect(g.FdsAtExit).To(Equal(r.Fds.AtExit.Min), "generation %d", g.Gen)
		if g.Gen > 0 {
			Expect(g.FdsAfterHandoff).To(Equal(r.Fds.AfterHandoff.Min), "generation %d", g.Gen)
		}
	}
	Expect(r.Fds.SupervisorEnd).To(BeNumerically("<=", r.Fds.SupervisorStart))
}

var _ = Describe("restart-sim", Label("restart-sim", "e2e"), func() {
	It("restarts a few times under every load and loses nothing", func() {
		chart := filepath.Join(GinkgoT().TempDir(), "latency.svg")
		session, jsonPath := start("-restarts", "5", "-interval", "100ms", "-baseline", "500ms",
			"-concurrency", "2", "-chart", chart)
		Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(0))
		Expect(session.Out).To(gbytes.Say("PASS: nothing lost, failed or duplicated across 5 restarts"))

		r := readReport(jsonPath)
		Expect(r.Verdict.Pass).To(BeTrue(), "%v", r.Verdict.Problems)
		Expect(r.Restarts.Done).To(Equal(5))
		Expect(r.Restarts.Failed).To(BeZero())
		expectNothingLost(r)
		expectFlatFds(r)

		By("checking that every generation took over and served")
		Expect(r.Generations).To(HaveLen(6))
		for i, g := range r.Generations {
			Expect(g.Gen).To(Equal(i + 1))
			want := report.Retired
			if i == 5 {
				want = report.Final
			}
			Expect(g.Outcome).To(Equal(want), "generation %d: %+v", i, g)
			Expect(g.Served).To(HaveKeyWithValue("stream", BeNumerically(">", 0)), "generation %d", i)
		}
		Expect(r.Supervisor.GenerationsReaped).To(Equal(6))

		By("checking the chart")
		svg, err := os.ReadFile(chart)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(svg)).To(ContainSubstring("<svg"))
	})

	DescribeTable("rolls back a faulty generation: the old one keeps serving",
		func(fault string) {
			// -ready-timeout bounds the good generations too, race-built
			// here: 2s leaves them room on a busy machine (and -timeout's
			// default, 3s, is what the hang fault needs with it).
			session, jsonPath := start("-restarts", "2", "-interval", "100ms", "-baseline", "300ms",
				"-concurrency", "2", "-faults", fault, "-ready-timeout", "2s")
			Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(0))
			Expect(session.Out).To(gbytes.Say("fault " + fault + "\\): rolled back: the old generation kept serving"))

			r := readReport(jsonPath)
			Expect(r.Verdict.Pass).To(BeTrue(), "%v", r.Verdict.Problems)
			Expect(r.Restarts.Done).To(Equal(2))
			Expect(r.Restarts.FaultsInjected).To(Equal(1))
			Expect(r.Restarts.RolledBack).To(Equal(1))
			var faulty report.Attempt
			for _, a := range r.Restarts.Attempts {
				if a.Fault != "" {
					faulty = a
				}
			}
			Expect(faulty.Fault).To(Equal(fault))
			Expect(faulty.OK).To(BeFalse())
			Expect(faulty.RolledBack).To(BeTrue())
			Expect(faulty.Error).NotTo(BeEmpty())

			By("checking the faulty generation was removed and the one it tried to replace served on")
			faultyGen := r.Generations[faulty.Gen-1]
			Expect(faultyGen.Gen).To(Equal(faulty.Gen))
			Expect(faultyGen.Outcome).To(Equal(report.RolledBack))
			Expect(faultyGen.Served).To(BeEmpty())
			kept := r.Generations[faulty.From-1]
			Expect(kept.Outcome).To(Equal(report.Retired))
			next := r.Restarts.Attempts[faulty.Index] // the attempt after the fault
			Expect(next.From).To(Equal(faulty.From))
			Expect(next.OK).To(BeTrue())
			expectNothingLost(r)
			expectFlatFds(r)
			Expect(r.Supervisor.GenerationsReaped).To(Equal(len(r.Generations)))
		},
		Entry("crash before ready", "crash"),
		Entry("hang after the set arrived", "hang"),
		Entry("killed mid-handoff", "kill"),
	)

	It("stops cleanly on SIGTERM: drains the current generation, reports, exits 3", func() {
		session, jsonPath := start("-restarts", "100000", "-interval", "100ms", "-baseline", "200ms", "-concurrency", "1")
		Eventually(session.Err).WithTimeout(runTimeout).Should(gbytes.Say("restart phase"))
		session.Signal(syscall.SIGTERM)
		Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(3))
		Expect(session.Out).To(gbytes.Say("INTERRUPTED: nothing lost or failed"))

		r := readReport(jsonPath)
		Expect(r.Verdict.Interrupted).To(BeTrue())
		Expect(r.Verdict.Pass).To(BeTrue(), "%v", r.Verdict.Problems)
		expectNothingLost(r)
		last := r.Generations[len(r.Generations)-1]
		Expect(last.Outcome).To(Equal(report.Final))
		Expect(last.Exit).To(Equal("exit status 0"))
		Expect(r.Supervisor.GenerationsReaped).To(Equal(len(r.Generations)))
	})

	It("fails, with exit status 1, when the serving generation dies without an injected fault", func() {
		session, jsonPath := start("-restarts", "3", "-interval", "100ms", "-baseline", "1s", "-concurrency", "1")
		Eventually(session.Err).WithTimeout(runTimeout).Should(gbytes.Say("baseline phase"))
		By("killing generation 1 behind restart-sim's back: the supervisor replaces it, but the run fails")
		children := childrenOf(session.Command.Process.Pid)
		Expect(children).To(HaveLen(1))
		Expect(syscall.Kill(children[0], syscall.SIGKILL)).To(Succeed())
		Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(1))
		Expect(session.Out).To(gbytes.Say("FAIL"))

		r := readReport(jsonPath)
		Expect(r.Verdict.Pass).To(BeFalse())
		Expect(r.Verdict.Problems).To(ContainElement(HavePrefix("generation 1 failed (killed by signal killed")))
		Expect(r.Generations[0].Outcome).To(Equal(report.Failed))
		Expect(r.Generations[1].Outcome).To(Equal(report.Retired), "the supervisor started generation 2 after the crash")
		Expect(r.Supervisor.GenerationsReaped).To(Equal(len(r.Generations)))
	})

	It("recovers from crashes of the serving generation under load with no refused connection", func() {
		session, jsonPath := start("-restarts", "2", "-interval", "100ms", "-baseline", "300ms",
			"-concurrency", "2", "-faults", "sigkill,panic")
		Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(0))
		Expect(session.Out).To(gbytes.Say(`crashes 2, recovered 2, crash safety on`))

		r := readReport(jsonPath)
		Expect(r.Verdict.Pass).To(BeTrue(), "%v", r.Verdict.Problems)
		Expect(r.Config.CrashSafety).To(BeTrue())
		Expect(r.Restarts.Crashes).To(Equal(2))
		Expect(r.Restarts.Recovered).To(Equal(2))
		for _, a := range r.Restarts.Attempts {
			if a.Fault != "" {
				Expect(a.OK).To(BeTrue(), "%+v", a)
				Expect(a.RecoveryMs).To(BeNumerically(">", 0), "%+v", a)
				Expect(r.Generations[a.From-1].Outcome).To(Equal(report.Crashed))
				Expect(r.Generations[a.Gen-1].Served).NotTo(BeEmpty(), "the generation started after the crash served")
			}
		}
		for _, l := range r.Loads {
			Expect(l.DuringCrashes.FailedBy).NotTo(HaveKey("refused"), l.Name)
			Expect(l.FailedBy).NotTo(HaveKey("refused"), l.Name)
		}
		Expect(r.Fds.Flat).To(BeTrue(), "%+v", r.Fds)
	})

	It("with -spare, recovers from crashes through the spare, under load, with no refused connection", func() {
		session, jsonPath := start("-restarts", "2", "-interval", "100ms", "-baseline", "300ms",
			"-concurrency", "2", "-faults", "sigkill,panic", "-spare", "-verbose")
		Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(0))
		Expect(session.Out).To(gbytes.Say(`crashes 2, recovered 2, crash safety on, with a spare`))
		Expect(session.Err).To(gbytes.Say(`spare takes over`))

		r := readReport(jsonPath)
		Expect(r.Verdict.Pass).To(BeTrue(), "%v", r.Verdict.Problems)
		Expect(r.Config.Spare).To(BeTrue())
		Expect(r.Restarts.Recovered).To(Equal(2))
		gen := map[int]report.Generation{}
		for _, g := range r.Generations {
			gen[g.Gen] = g
		}
		for _, a := range r.Restarts.Attempts {
			if a.Fault != "" {
				Expect(a.OK).To(BeTrue(), "%+v", a)
				Expect(gen[a.From].Outcome).To(Equal(report.Crashed))
				Expect(gen[a.Gen].Served).NotTo(BeEmpty(), "the spare that took over served")
			}
		}
		for _, l := range r.Loads {
			Expect(l.FailedBy).NotTo(HaveKey("refused"), l.Name)
		}
		Expect(r.Fds.Flat).To(BeTrue(), "%+v", r.Fds)
	})

	It("without crash safety, reports the connections refused while a crashed generation was replaced", func() {
		// Three crashes under 8 clients a load: a replacement binds within
		// a few milliseconds, and a refusal needs a connection in that gap.
		session, jsonPath := start("-restarts", "1", "-interval", "100ms", "-baseline", "300ms",
			"-concurrency", "8", "-faults", "sigkill,sigkill,sigkill", "-crash-safety=false")
		Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(0))
		Expect(session.Out).To(gbytes.Say(`crash safety OFF`))

		r := readReport(jsonPath)
		Expect(r.Verdict.Pass).To(BeTrue(), "refused connections fail the run only with crash safety on: %v", r.Verdict.Problems)
		refused := int64(0)
		for _, l := range r.Loads {
			refused += l.DuringCrashes.FailedBy["refused"]
		}
		Expect(refused).To(BeNumerically(">", 0))
		Expect(r.Restarts.Recovered).To(Equal(3))
	})

	Describe("a service of the user's (the example web server)", func() {
		// run drives the example under restart-sim with args, and returns
		// the report once restart-sim exited with code.
		run := func(code int, args ...string) report.Report {
			GinkgoHelper()
			addr, err := freeTCP()
			Expect(err).NotTo(HaveOccurred())
			sock := filepath.Join(GinkgoT().TempDir(), "example.sock")
			args = append(args, "-http", "http://"+addr+"/", "--", example, "-addr", addr, "-socket", sock)
			session, jsonPath := start(args...)
			Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(code))
			return readReport(jsonPath)
		}

		It("restarts it under load, and recovers it from crashes with no refused connection", func() {
			r := run(0, "-restarts", "3", "-interval", "100ms", "-baseline", "300ms", "-concurrency", "2", "-faults", "sigkill,panic")
			Expect(r.Verdict.Pass).To(BeTrue(), "%v", r.Verdict.Problems)
			Expect(r.Config.Command).To(HaveLen(5))
			Expect(r.Restarts.Done).To(Equal(3))
			Expect(r.Restarts.Recovered).To(Equal(2))
			Expect(r.Loads).To(HaveLen(2))
			for _, l := range r.Loads {
				Expect(l.Name).To(BeElementOf("http", "keepalive"))
				Expect(l.Sent).To(BeNumerically(">", 0))
				Expect(l.FailedBy).NotTo(HaveKey("refused"), l.Name)
				Expect(l.Failed-l.DuringCrashes.Failed).To(BeZero(), "%s: %+v", l.Name, l)
			}
			Expect(r.Generations).To(HaveLen(6))
			Expect(r.Generations[len(r.Generations)-1].Outcome).To(Equal(report.Final))
		})

		DescribeTable("restarts and crashes the Python demo service (example/python) with no refused connection",
			func(spare bool) {
				if _, err := exec.LookPath("python3"); err != nil {
					Skip("python3 is not installed")
				}
				addr, err := freeTCP()
				Expect(err).NotTo(HaveOccurred())
				sock := filepath.Join(GinkgoT().TempDir(), "demo.sock")
				demo, err := filepath.Abs("../../example/python/demo.py")
				Expect(err).NotTo(HaveOccurred())
				args := []string{"-restarts", "2", "-interval", "100ms", "-baseline", "300ms", "-concurrency", "2",
					"-faults", "sigkill", "-handoff", sock, "-http", "http://" + addr + "/"}
				if spare {
					args = append(args, "-spare", "-verbose")
				}
				session, jsonPath := start(append(args, "--", "python3", demo, "--addr", addr, "--handoff", sock)...)
				Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(0))
				r := readReport(jsonPath)
				Expect(r.Verdict.Pass).To(BeTrue(), "%v", r.Verdict.Problems)
				Expect(r.Restarts.Done).To(Equal(2))
				Expect(r.Restarts.Recovered).To(Equal(1))
				for _, l := range r.Loads {
					Expect(l.FailedBy).NotTo(HaveKey("refused"), l.Name)
				}
				if spare {
					Expect(session.Err).To(gbytes.Say(`spare takes over`), "pygraceful's receive waits as a spare")
					Expect(string(session.Err.Contents())).NotTo(ContainSubstring("spare took over unasked"))
				}
			},
			Entry("without a spare", false),
			Entry("with a spare (-spare): pygraceful waits for its turn", true),
		)

		It("fails the run when the service answers with another status than -http-status", func() {
			r := run(1, "-restarts", "1", "-interval", "100ms", "-baseline", "200ms", "-concurrency", "1", "-http-status", "204")
			Expect(r.Verdict.Problems).To(ContainElement(MatchRegexp(`^http: \d+ failed \(wrong \d+\)$`)))
		})
	})

	// Each defect of the demo service must fail the verdict, and every
	// problem listed must name the load the defect breaks: the simulator
	// catches what it claims to catch, and says where.
	DescribeTable("catches a faulty demo service, naming the load it breaks",
		func(defect, first, problem string) {
			session, jsonPath := start("-restarts", "2", "-interval", "100ms", "-baseline", "200ms",
				"-concurrency", "2", "-progress", "0", "-defect", defect)
			Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(1))
			Expect(session.Out).To(gbytes.Say("FAIL"))

			r := readReport(jsonPath)
			Expect(r.Config.Defect).To(Equal(defect))
			Expect(r.Verdict.Pass).To(BeFalse())
			Expect(r.Verdict.Problems).To(ContainElement(MatchRegexp(problem)))
			Expect(r.Verdict.Problems).To(HaveEach(HavePrefix(first)), "only the load the defect breaks")
		},
		Entry(nil, "http-wrong", "http:", `^http: \d+ failed \(wrong \d+\)$`),
		Entry(nil, "http-no-answer", "http:", `^http: \d+ failed \(eof \d+\)$`),
		Entry(nil, "keepalive-status", "keepalive:", `^keepalive: \d+ failed \(wrong \d+\)$`),
		Entry(nil, "keepalive-abort", "keepalive:", `^keepalive: \d+ retried: the server closed a reused keep-alive connection`),
		Entry(nil, "stream-drop", "stream:", `^stream: \d+ failed \(timeout \d+\)$`),
		Entry(nil, "stream-repeat", "stream:", `^stream: \d+ duplicated$`),
		Entry(nil, "stream-state", "stream:", `^stream: \d+ failed \(wrong \d+\)$`),
		Entry(nil, "stream-rebind", "stream:", `^stream: \d+ failed \(.*refused \d+`),
		Entry(nil, "stream-rebind", "stream:", `^stream: generation \d+ serves at \S+, not at \S+: it did not take the stream descriptor over$`),
		Entry(nil, "stream-not-taken", "stream:", `^stream: \d+ failed \(.*(eof|reset)`),
		Entry(nil, "udp-drop", "udp:", `^udp: \d+ lost$`),
		Entry(nil, "udp-twice", "udp:", `^udp: \d+ duplicated$`),
		Entry(nil, "udp-not-taken", "udp:", `^udp: \d+ failed \(.*refused \d+`),
		Entry(nil, "lines-skip", "file:", `^file: \d+ lost$`),
		Entry(nil, "lines-double", "file:", `^file: \d+ duplicated$`),
		Entry(nil, "lines-torn", "file:", `^file: \d+ failed \(wrong \d+\)$`),
		Entry(nil, "leak", "descriptor counts not flat", `^descriptor counts not flat: after hand-off \d+\.\.\d+`),
	)

	It("rejects a bad flag with a clear message and exit status 2", func() {
		session, err := gexec.Start(exec.Command(binary, "-interval", "1ms"), GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		Eventually(session).WithTimeout(runTimeout).Should(gexec.Exit(2))
		Expect(session.Err).To(gbytes.Say("-interval must be at least 10ms, got 1ms"))
	})
})
