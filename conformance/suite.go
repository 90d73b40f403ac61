package conformance

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"
)

// env is what every spec body shares: the configuration of the run, and
// the scenarios the specs use, which it runs ahead of them in parallel.
type env struct {
	cfg Config

	// During tree construction: the labels of the containers being built,
	// and the scenarios registered in each (innermost last).
	frames []*frame
	// jobs are the scenarios, in the order their specs run.
	jobs  []*job
	start sync.Once
	setup sync.Once
}

// frame is one container being built.
type frame struct {
	labels []string
	jobs   []*job
}

// job is one scenario: run once, by the first spec that needs it or ahead
// of it by the scheduler, and shared by every spec of its container.
type job struct {
	run  func()
	once sync.Once
	done chan struct{}
	// specs are the labels and level of each spec that uses it, to tell
	// whether the run's filter selects any of them.
	specs []specUse
}

type specUse struct {
	labels []string
	level  Level
}

func (j *job) get() {
	j.once.Do(func() {
		defer close(j.done)
		j.run()
	})
	<-j.done
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
	{"6. Limits", limitSpecs},
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
	e := &env{}
	Describe(SuiteName, func() {
		BeforeEach(func() {
			Expect(cfg.check()).To(Succeed())
			// Once: scenarios running in the background read it.
			e.setup.Do(func() { e.cfg = *cfg })
		})
		for _, s := range sections {
			e.describe(s.title, func() { s.specs(e) })
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

// describe is Describe that keeps track of the labels of the containers
// being built, so that the scheduler knows which specs use a scenario.
func (e *env) describe(text string, args ...any) bool {
	f := &frame{}
	for _, a := range args {
		if l, ok := a.(Labels); ok {
			f.labels = append(f.labels, l...)
		}
	}
	for i, a := range args {
		if body, ok := a.(func()); ok {
			args[i] = func() {
				e.frames = append(e.frames, f)
				defer func() { e.frames = e.frames[:len(e.frames)-1] }()
				body()
			}
		}
	}
	return Describe(text, args...)
}

// containerLabels are the labels of every container being built.
func (e *env) containerLabels() []string {
	var out []string
	for _, f := range e.frames {
		out = append(out, f.labels...)
	}
	return out
}

// verify registers one spec that checks the requirements ids (space
// separated, one level), labelled for filtering and verdicts. A check of
// SHOULD-level requirements is skipped unless the run is strict.
func (e *env) verify(text, ids string, body func(), decorators ...any) bool {
	labels, level := reqLabels(ids)
	var own []string
	for _, d := range decorators {
		if l, ok := d.(Labels); ok {
			own = append(own, l...)
		}
	}
	use := specUse{labels: append(append(e.containerLabels(), labels...), own...), level: level}
	if len(e.frames) > 0 {
		for _, j := range e.frames[len(e.frames)-1].jobs {
			j.specs = append(j.specs, use)
		}
	}
	args := append([]any{Label(labels...)}, decorators...)
	args = append(args, func() {
		if level == Should && !e.cfg.Strict {
			Skip(skipNotStrict + "SHOULD-level: runs with --strict")
		}
		body()
	})
	return It(fmt.Sprintf("%s [%s]", text, strings.Join(strings.Fields(ids), " ")), args...)
}

// Reasons a check does not run, at the start of its skip message: they
// decide the verdict (verdict.go).
const (
	// skipNotStrict: a SHOULD-level check in a run without strict.
	skipNotStrict = "not strict: "
	// skipUntested: the adapter does not offer what the check needs (a
	// feature of the contract): the requirement is UNTESTED, not failed.
	skipUntested = "untested: "
	// skipEnvironment: the machine cannot run the check (not root, no
	// kernel support). A MUST skipped so fails the run unless allowed.
	skipEnvironment = "skipped: "
)

// untested skips a check the adapter cannot reach.
func untested(format string, args ...any) {
	Skip(skipUntested + fmt.Sprintf(format, args...))
}

// skipFor skips a check the machine cannot run.
func skipFor(format string, args ...any) {
	Skip(skipEnvironment + fmt.Sprintf(format, args...))
}

// iut labels a container with the adapter roles it runs.
func iut(role string) Labels { return Label(labelIUT + role) }

// scenario registers run as a scenario of the container being built and
// returns what its specs call to get its record: the scenario runs once,
// ahead of them when the scheduler gets to it.
func (e *env) scenario(run func()) func() {
	j := &job{run: run, done: make(chan struct{})}
	e.jobs = append(e.jobs, j)
	if len(e.frames) > 0 {
		f := e.frames[len(e.frames)-1]
		f.jobs = append(f.jobs, j)
	}
	return func() {
		e.start.Do(e.prefetch)
		j.get()
	}
}

// prefetch runs, in the background, every scenario that a selected spec
// uses, a few at a time, in the order the specs run: most of a scenario's
// time is spent waiting for deadlines and processes, not computing.
func (e *env) prefetch() {
	filter := func([]string) bool { return true }
	if f, err := types.ParseLabelFilter(e.cfg.labelFilter()); err == nil {
		filter = f
	}
	var wanted []*job
	for _, j := range e.jobs {
		for _, s := range j.specs {
			if filter(s.labels) && (s.level != Should || e.cfg.Strict) {
				wanted = append(wanted, j)
				break
			}
		}
	}
	sem := make(chan struct{}, e.cfg.parallel())
	go func() {
		for _, j := range wanted {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				j.get()
			}()
		}
	}()
}

// lazyReceiver registers a receiver scenario; every spec of the container
// gets the same record.
func (e *env) lazyReceiver(sc receiverScenario) func() *receiverRun {
	var r *receiverRun
	get := e.scenario(func() {
		r = safely(func() *receiverRun { return sc.run(e) }, func(err error) *receiverRun { return &receiverRun{suiteErr: err} })
	})
	return func() *receiverRun {
		get()
		return r
	}
}

// lazySender is lazyReceiver for sender scenarios.
func (e *env) lazySender(sc senderScenario) func() *senderRun {
	var r *senderRun
	get := e.scenario(func() {
		r = safely(func() *senderRun { return sc.run(e) }, func(err error) *senderRun { return &senderRun{suiteErr: err} })
	})
	return func() *senderRun {
		get()
		return r
	}
}

// safely runs a scenario, turning a panic of the suite's own code into a
// record that fails its specs (a scenario runs on a goroutine of its own,
// where a panic would end the process).
func safely[T any](run func() T, failed func(error) T) (out T) {
	defer func() {
		if p := recover(); p != nil {
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			out = failed(fmt.Errorf("the suite panicked: %v\n%s", p, buf))
		}
	}()
	return run()
}
