//go:build linux

// Package harnesstest adapts package harness to Ginkgo and Gomega: every
// process it starts is killed and reaped by DeferCleanup, failures fail the
// spec with what was expected and what was seen, and a suite run with
// "go test -count=N" repeats its specs instead of being refused by Ginkgo.
//
// A suite wires it up in TestMain and its Test function:
//
//	var helpers = harness.Helpers{"server": server}
//
//	func TestMain(m *testing.M) { os.Exit(harnesstest.Main(m, helpers)) }
//
//	func TestSuite(t *testing.T) {
//		RegisterFailHandler(Fail)
//		Describe("everything", harnesstest.Repeat(), func() { ... })
//		RunSpecs(t, "suite")
//	}
//
// It lives apart from package harness because importing Ginkgo registers
// Ginkgo's flags on the program's command line, which a tool such as
// cmd/restart-sim must not get.
package harnesstest

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"go.uber.org/goleak"

	"github.com/gracefulfd/graceful/harness"
)

// Main is the whole body of TestMain for a suite with helpers: in a child
// started for a helper it runs that helper and returns its exit code;
// otherwise it runs the tests. Go test's -count=N is turned into -count=1
// (Ginkgo refuses any other value) and Repeat makes the specs run N times.
func Main(m *testing.M, helpers harness.Helpers) int {
	if code, ok := helpers.Dispatch(); ok {
		return code
	}
	flag.Parse()
	if f := flag.Lookup("test.count"); f != nil && f.Value.String() != "1" {
		f.Value.Set("1")
	}
	return m.Run()
}

// Repeat is a decorator for a suite's outermost container: it makes each
// spec pass as many times in a row as go test's -count asked for (see
// Main). It reads the count from the command line, so it may be evaluated
// before or after Main.
func Repeat() ginkgo.MustPassRepeatedly {
	return ginkgo.MustPassRepeatedly(countFromArgs(os.Args[1:]))
}

func countFromArgs(args []string) int {
	n := 1
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "test.count" || !strings.HasPrefix(a, "-") {
			continue
		}
		if !hasValue && i+1 < len(args) {
			value = args[i+1]
		}
		if v, err := strconv.Atoi(value); err == nil && v > 1 {
			n = v
		}
	}
	return n
}

// quitWait is how long a failed spec's helper gets to print its stacks.
const quitWait = 2 * time.Second

// Start starts c, failing the spec if it cannot. Output the Cmd does not
// direct elsewhere goes to GinkgoWriter, each chunk prefixed with the
// process's name and pid. Unless c.Env sets GORACE, it adds
// GORACE=atexit_sleep_ms=0: a child built with -race otherwise sleeps a
// second before it exits. A DeferCleanup kills the process (and its group)
// if it still runs and reaps it, so a failed spec leaves nothing behind;
// when the spec failed, a helper still running first gets SIGQUIT, so that
// its goroutines' stacks show in the output.
func Start(c harness.Cmd) *harness.Process {
	ginkgo.GinkgoHelper()
	if !slices.ContainsFunc(c.Env, func(kv string) bool { return strings.HasPrefix(kv, "GORACE=") }) {
		c.Env = append(slices.Clip(c.Env), "GORACE=atexit_sleep_ms=0")
	}
	name := c.Helper
	if name == "" {
		name = c.Path
	}
	prefix := &prefixWriter{w: ginkgo.GinkgoWriter, prefix: "[" + name + "] "}
	if c.Stdout == nil {
		c.Stdout = prefix
	}
	if c.Stderr == nil {
		c.Stderr = prefix
	}
	p, err := harness.Start(c)
	gomega.Expect(err).NotTo(gomega.HaveOccurred(), "start %s", name)
	prefix.setPrefix(fmt.Sprintf("[%s %d] ", name, p.Pid()))
	ginkgo.DeferCleanup(func() {
		if _, exited := p.Exit(); !exited && c.Helper != "" && ginkgo.CurrentSpecReport().Failed() {
			// A Go program prints every goroutine's stack on SIGQUIT:
			// the best clue to where a helper was stuck.
			if p.Signal(syscall.SIGQUIT) == nil {
				p.Wait(quitWait)
			}
		}
		_, err := p.Kill()
		prefix.flush()
		gomega.Expect(err).NotTo(gomega.HaveOccurred(), "kill and reap %v", p)
	})
	return p
}

// Wait waits up to timeout for p to exit and returns how it ended.
func Wait(p *harness.Process, timeout time.Duration) harness.Exit {
	ginkgo.GinkgoHelper()
	exit, err := p.Wait(timeout)
	gomega.Expect(err).NotTo(gomega.HaveOccurred())
	return exit
}

// ExpectExitSuccess waits up to timeout for p to exit with code 0.
func ExpectExitSuccess(p *harness.Process, timeout time.Duration) {
	ginkgo.GinkgoHelper()
	exit := Wait(p, timeout)
	gomega.Expect(exit.Success()).To(gomega.BeTrue(), "%v ended with %v, want exit status 0", p, exit)
}

// Tell sends a control message to p, failing the spec on error.
func Tell(p *harness.Process, typ string, data any) {
	ginkgo.GinkgoHelper()
	gomega.Expect(p.Control().Send(typ, data)).To(gomega.Succeed(), "send %q to %v", typ, p)
}

// Await reads the next control message of p, which must be of type typ,
// into data (unless nil), failing the spec otherwise.
func Await(p *harness.Process, typ string, data any) {
	ginkgo.GinkgoHelper()
	gomega.Expect(p.Control().Expect(typ, data)).To(gomega.Succeed(), "from %v", p)
}

// Snapshot lists pid's open descriptors, failing the spec on error.
func Snapshot(pid int) harness.Snapshot {
	ginkgo.GinkgoHelper()
	s, err := harness.TakeSnapshot(pid)
	gomega.Expect(err).NotTo(gomega.HaveOccurred())
	return s
}

// ExpectNoneOpened fails the spec unless, within timeout, process
// before.Pid has no descriptor that before did not have.
func ExpectNoneOpened(before harness.Snapshot, timeout time.Duration) {
	ginkgo.GinkgoHelper()
	gomega.Expect(harness.WaitNoneOpened(before, timeout)).To(gomega.Succeed())
}

// DescribeFD describes descriptor num of pid, failing the spec on error.
func DescribeFD(pid, num int) harness.FD {
	ginkgo.GinkgoHelper()
	fd, err := harness.DescribeFD(pid, num)
	gomega.Expect(err).NotTo(gomega.HaveOccurred())
	return fd
}

// TrackLeaks, called from a BeforeEach (or a spec), records this process's
// descriptors and goroutines and registers a DeferCleanup that fails the
// spec if, within timeout, some opened since are still open or running.
// Registered first, it runs after the spec's other cleanups (which kill
// its processes).
func TrackLeaks(timeout time.Duration, ignore ...goleak.Option) {
	ginkgo.GinkgoHelper()
	acc, err := harness.StartAccounting()
	gomega.Expect(err).NotTo(gomega.HaveOccurred())
	ginkgo.DeferCleanup(func() {
		gomega.Expect(acc.Check(timeout, ignore...)).To(gomega.Succeed())
	})
}

// prefixWriter writes whole lines, each prefixed with a label, so that the
// output of several processes stays readable.
type prefixWriter struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  string
	partial []byte
}

func (p *prefixWriter) setPrefix(s string) {
	p.mu.Lock()
	p.prefix = s
	p.mu.Unlock()
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	end := bytes.LastIndexByte(p.partial, '\n')
	if end < 0 {
		return len(b), nil
	}
	var out []byte
	for line := range bytes.Lines(p.partial[:end+1]) {
		out = append(out, p.prefix...)
		out = append(out, line...)
	}
	p.partial = append(p.partial[:0], p.partial[end+1:]...)
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// flush writes what is left of a last line without a newline.
func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partial) > 0 {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.partial)
		p.partial = nil
	}
}
