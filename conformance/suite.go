package conformance

import (
	"fmt"
	"io"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// env is what every spec body shares: the configuration of the run.
type env struct {
	cfg Config
}

func (e *env) log() io.Writer {
	if e.cfg.Log != nil {
		return e.cfg.Log
	}
	return GinkgoWriter
}

// section is one part of the suite, named after the spec section it checks.
type section struct {
	title string
	specs func(e *env)
}

// sections lists the suite, in the order of spec/protocol.md.
var sections = []section{
	{"2. Transport", transportSpecs},
	{"3. Frames", frameSpecs},
	{"4.1 Version negotiation", negotiationSpecs},
	{"4.2 Sending the set", sendingSpecs},
	{"4.3 Receiving the set", receivingSpecs},
	{"4.4 Acknowledgement and ready", ackSpecs},
	{"5. Metadata", metadataSpecs},
	{"7. Malformed input and 8. Error codes", malformedSpecs},
	{"9. Peer authentication", authSpecs},
	{"Interoperability", interopSpecs},
}

// SuiteName is the description RunSpecs gets.
const SuiteName = "graceful conformance"

// GinkgoTest registers the suite's specs in the caller's Ginkgo suite, for
// a suite that runs them among its own (csi-sanity style). Call it from a
// container or at the top level, before RunSpecs. cfg is read when the specs
// run, so the caller may fill it in a BeforeSuite.
func GinkgoTest(cfg *Config) {
	Describe(SuiteName, func() {
		e := &env{}
		BeforeEach(func() {
			Expect(cfg.check()).To(Succeed())
			e.cfg = *cfg
		})
		for _, s := range sections {
			Describe(s.title, func() { s.specs(e) })
		}
	})
}

// Test runs the whole suite against cfg.Adapter as one Go test. It calls
// RunSpecs, which runs once per process: one Test per test binary. Ginkgo's
// flags (-ginkgo.label-filter, -ginkgo.junit-report, ...) apply.
func Test(t *testing.T, cfg Config) {
	t.Helper()
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	GinkgoTest(&cfg)
	RegisterFailHandler(Fail)
	RunSpecs(t, SuiteName)
}

// verify registers one spec that checks the requirements ids (space
// separated, one level), labelled for filtering and verdicts. A check of
// SHOULD-level requirements is skipped unless the run is strict.
func (e *env) verify(text, ids string, body func(), decorators ...any) bool {
	labels, level := reqLabels(ids)
	args := append([]any{Label(labels...)}, decorators...)
	args = append(args, func() {
		if level == Should && !e.cfg.Strict {
			Skip("SHOULD-level: runs with strict")
		}
		body()
	})
	return It(fmt.Sprintf("%s [%s]", text, strings.Join(strings.Fields(ids), " ")), args...)
}

// iut labels a container with the adapter roles it runs.
func iut(role string) Labels { return Label(labelIUT + role) }

// lazyReceiver runs the scenario the first time a spec asks for it, and
// hands every spec of the container the same record.
func (e *env) lazyReceiver(sc receiverScenario) func() *receiverRun {
	var r *receiverRun
	return func() *receiverRun {
		if r == nil {
			By("running the receiver scenario")
			r = sc.run(e)
		}
		return r
	}
}

// lazySender is lazyReceiver for sender scenarios.
func (e *env) lazySender(sc senderScenario) func() *senderRun {
	var r *senderRun
	return func() *senderRun {
		if r == nil {
			By("running the sender scenario")
			r = sc.run(e)
		}
		return r
	}
}
