//go:build linux

package supervisor_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	"go.uber.org/goleak"

	"github.com/gracefulfd/graceful/supervisor"
)

// TestMain lets this test binary be the shim that sets LISTEN_PID for the
// generations that get stored descriptors (Config.Shim defaults to it).
func TestMain(m *testing.M) {
	if err := supervisor.ExecShim(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(127)
	}
	os.Exit(m.Run())
}

func TestSupervisor(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "supervisor")
}

// service is the test service's binary (internal/testservice).
var service string

var _ = BeforeSuite(func() {
	// Bounds for what must happen eventually, generous for a loaded machine;
	// never a measure of speed.
	SetDefaultEventuallyTimeout(30 * time.Second)
	var err error
	service, err = gexec.Build("github.com/gracefulfd/graceful/supervisor/internal/testservice")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)
})

// Every spec must leave the descriptors and goroutines it found.
var _ = BeforeEach(func() {
	before := openFds()
	running := goleak.IgnoreCurrent()
	DeferCleanup(func() {
		Eventually(openFds).WithTimeout(5*time.Second).Should(Equal(before), "descriptors leaked")
		Eventually(func() error { return goleak.Find(running) }).WithTimeout(5 * time.Second).Should(Succeed())
	})
})

func openFds() []string {
	GinkgoHelper()
	entries, err := os.ReadDir("/proc/self/fd")
	Expect(err).NotTo(HaveOccurred())
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// running is a supervisor whose Run runs in the background.
type running struct {
	*supervisor.Supervisor
	out, errs *gbytes.Buffer
	logs      *records
	events    *eventLog
	result    chan runResult
	modeFile  string
}

type runResult struct {
	exit supervisor.Exit
	err  error
}

// start runs a supervisor of the test service with args; cfg's Path,
// Args, Stdout, Stderr and Logger are filled in, and its events recorded
// (before cfg.Events, if set, sees them). It is stopped (SIGTERM)
// at the end of the spec if still running.
func start(cfg supervisor.Config, args ...string) *running {
	GinkgoHelper()
	return startMode("", cfg, args...)
}

// startMode is start with the generations' mode set from the first one on.
func startMode(mode string, cfg supervisor.Config, args ...string) *running {
	GinkgoHelper()
	r := &running{
		out: gbytes.NewBuffer(), errs: gbytes.NewBuffer(), logs: &records{}, events: &eventLog{},
		result:   make(chan runResult, 1),
		modeFile: filepath.Join(GinkgoT().TempDir(), "mode"),
	}
	if cfg.Path == "" {
		cfg.Path = service
		cfg.Args = append([]string{"-mode-file", r.modeFile}, args...)
	}
	cfg.Stdout = io.MultiWriter(r.out, GinkgoWriter)
	cfg.Stderr = io.MultiWriter(r.errs, GinkgoWriter)
	cfg.Logger = slog.New(r.logs)
	theirs := cfg.Events
	cfg.Events = func(e supervisor.Event) {
		r.events.add(e)
		if theirs != nil {
			theirs(e)
		}
	}
	r.mode(mode)
	var err error
	r.Supervisor, err = supervisor.New(cfg)
	Expect(err).NotTo(HaveOccurred())
	go func() {
		exit, err := r.Run(context.Background())
		r.result <- runResult{exit, err}
	}()
	DeferCleanup(func() {
		r.Stop(syscall.SIGTERM)
		r.wait()
	})
	return r
}

// mode sets what the next generations do (see internal/testservice).
func (r *running) mode(m string) {
	GinkgoHelper()
	Expect(os.WriteFile(r.modeFile, []byte(m), 0o600)).To(Succeed())
}

// wait waits for Run to return, once.
func (r *running) wait() runResult {
	GinkgoHelper()
	var res runResult
	Eventually(r.result).WithTimeout(30*time.Second).Should(Receive(&res), "Run did not return")
	r.result <- res // for the next caller
	return res
}

func (r *running) status() supervisor.Status {
	GinkgoHelper()
	st, ok := r.Status()
	Expect(ok).To(BeTrue(), "the supervisor does not run")
	return st
}

// serving waits until generation n serves, and returns it.
func (r *running) serving(n int) supervisor.Generation {
	GinkgoHelper()
	var g supervisor.Generation
	Eventually(func() int {
		st := r.status()
		if st.Serving == nil {
			return 0
		}
		g = *st.Serving
		return g.N
	}).WithTimeout(30*time.Second).Should(Equal(n), "generation %d does not serve", n)
	return g
}

// addr is the TCP address generation g says it listens on.
func addr(g supervisor.Generation) string {
	GinkgoHelper()
	a, ok := strings.CutPrefix(g.Status, "listening ")
	Expect(ok).To(BeTrue(), "status %q", g.Status)
	return a
}

// restartInBackground restarts r on a goroutine of its own, which expects
// the restart to succeed, and passes on the generation that took over.
func restartInBackground(r *running) <-chan supervisor.Generation {
	done := make(chan supervisor.Generation, 1)
	go func() {
		defer GinkgoRecover()
		g, err := restart(r)
		Expect(err).NotTo(HaveOccurred())
		done <- g
	}()
	return done
}

func restart(r *running) (supervisor.Generation, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return r.Restart(ctx)
}

// records is a slog.Handler that keeps every record, for specs that check
// what the supervisor said.
type records struct {
	mu   sync.Mutex
	list []slog.Record
}

func (h *records) Enabled(context.Context, slog.Level) bool { return true }
func (h *records) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *records) WithGroup(string) slog.Handler            { return h }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.list = append(h.list, r.Clone())
	h.mu.Unlock()
	fmt.Fprintf(GinkgoWriter, "[supervisor] %s", r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(GinkgoWriter, " %s=%v", a.Key, a.Value); return true })
	fmt.Fprintln(GinkgoWriter)
	return nil
}

// with returns the records with message msg, as maps of their attributes.
func (h *records) with(msg string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, r := range h.list {
		if r.Message != msg {
			continue
		}
		attrs := map[string]any{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.Any(); return true })
		out = append(out, attrs)
	}
	return out
}

// eventLog keeps every event of a supervisor, for specs that check what it
// reported.
type eventLog struct {
	mu   sync.Mutex
	list []supervisor.Event
}

func (l *eventLog) add(e supervisor.Event) {
	l.mu.Lock()
	l.list = append(l.list, e)
	l.mu.Unlock()
	line := fmt.Sprintf("[event] %s gen=%d pid=%d state=%s", e.Kind, e.Gen.N, e.Gen.PID, e.Gen.State)
	switch e.Kind {
	case supervisor.EventExited, supervisor.EventDied, supervisor.EventOrphan:
		line += " exit=" + e.Exit.String()
	case supervisor.EventBackoff:
		line += " wait=" + e.Wait.String()
	}
	if e.Err != nil {
		line += " err=" + e.Err.Error()
	}
	fmt.Fprintln(GinkgoWriter, line)
}

// all returns the events so far, in order.
func (l *eventLog) all() []supervisor.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]supervisor.Event(nil), l.list...)
}

// find returns the events of kind about generation n.
func (l *eventLog) find(kind supervisor.EventKind, n int) []supervisor.Event {
	var out []supervisor.Event
	for _, e := range l.all() {
		if e.Kind == kind && e.Gen.N == n {
			out = append(out, e)
		}
	}
	return out
}

// one waits until there is an event of kind about generation n, and
// returns the first.
func (l *eventLog) one(kind supervisor.EventKind, n int) supervisor.Event {
	GinkgoHelper()
	Eventually(l.find).WithArguments(kind, n).ShouldNot(BeEmpty(), "no %s event for generation %d", kind, n)
	return l.find(kind, n)[0]
}

// waits returns the wait of every EventBackoff so far, in order.
func (l *eventLog) waits() []time.Duration {
	var out []time.Duration
	for _, e := range l.all() {
		if e.Kind == supervisor.EventBackoff {
			out = append(out, e.Wait)
		}
	}
	return out
}

// steps names the events so far, in order, as "kind N" ("backoff WAIT"
// for waits), without EventStatus: each generation of the test service
// says STATUS= once, which specs check on its own.
func (l *eventLog) steps() []string {
	var out []string
	for _, e := range l.all() {
		switch e.Kind {
		case supervisor.EventStatus:
		case supervisor.EventBackoff:
			out = append(out, fmt.Sprintf("%s %v", e.Kind, e.Wait))
		default:
			out = append(out, fmt.Sprintf("%s %d", e.Kind, e.Gen.N))
		}
	}
	return out
}
