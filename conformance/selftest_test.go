package conformance_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"github.com/gracefulfd/graceful/conformance"
)

// binaries built once for the whole self-test.
var bin struct {
	cli, reference, mutants string
}

var _ = SynchronizedBeforeSuite(func() []byte {
	cli, err := gexec.Build("github.com/gracefulfd/graceful/conformance/cmd/graceful-conformance")
	Expect(err).NotTo(HaveOccurred())
	ref, err := gexec.Build("github.com/gracefulfd/graceful/conformance/adapters/reference")
	Expect(err).NotTo(HaveOccurred())
	mut, err := gexec.Build("github.com/gracefulfd/graceful/conformance/adapters/mutants")
	Expect(err).NotTo(HaveOccurred())
	return []byte(strings.Join([]string{cli, ref, mut}, "\n"))
}, func(paths []byte) {
	p := strings.Split(string(paths), "\n")
	bin.cli, bin.reference, bin.mutants = p[0], p[1], p[2]
})

var _ = SynchronizedAfterSuite(func() {}, func() { gexec.CleanupBuildArtifacts() })

// cliRun is one run of graceful-conformance.
type cliRun struct {
	args   []string
	code   int
	result conformance.Result
	err    error
	output string
}

func (r *cliRun) failing() []string { return r.result.IDs(conformance.VerdictFail) }

func (r *cliRun) describe() string {
	return fmt.Sprintf("\ngraceful-conformance %s: exit %d, err %v\n--- output (tail) ---\n%s", strings.Join(r.args, " "), r.code, r.err, tailOf(r.output, 6000))
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// runCLI runs the CLI once, in its own process (RunSpecs runs once per
// process), with a JSON report.
func runCLI(dir, name string, args ...string) *cliRun {
	report := filepath.Join(dir, name+".json")
	r := &cliRun{args: append(args, "--json-report", report)}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.cli, r.args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r.output = out.String()
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		r.err = err
		return r
	}
	b, err := os.ReadFile(report)
	if err != nil {
		r.err = err
		return r
	}
	r.err = json.Unmarshal(b, &r.result)
	return r
}

// adapterArgs are the CLI flags for one adapter: strict, so that SHOULD
// checks run too, and a short wait so that the hanging mutant costs
// seconds, not minutes.
func adapterArgs(adapter string) []string {
	return []string{"--strict", "--wait", "5s", "--adapter", adapter}
}

// mutantBreaks lists, for every mutant, the requirements the suite must
// fail, and no others. Pair checks (an adapter as sender and as
// receiver) name requirements of both sides, so a sender fault shows on
// some receiver requirements too.
var mutantBreaks = map[string][]string{
	"none":          {},
	"any-uid":       {"AUTH-1"},
	"batch-253":     {"SND-3"},
	"blocking":      {"TRN-9"},
	"drop-meta":     {"RCV-7", "META-1", "META-2"},
	"hang":          {"TRN-8", "RCV-6", "ERR-2"},
	"per-read":      {"TRN-8", "ERR-2"},
	"ignore-ctrunc": {"TRN-5"},
	"late-fds":      {"TRN-3", "SND-8"},
	"leak-on-error": {"RCV-6", "ERR-2"},
	"liar":          {"TRN-1", "TRN-2", "TRN-4", "TRN-6", "SND-2", "RCV-1"},
	"little-endian": {"TRN-1", "TRN-3", "TRN-9", "TRN-10", "FRM-1", "FRM-2", "NEG-3", "NEG-5", "SND-1", "SND-2",
		"SND-3", "SND-5", "SND-6", "SND-7", "SND-8", "RCV-1", "RCV-7", "ACK-1", "ACK-2", "RDY-2", "RDY-3",
		"META-1", "ERR-1", "ERR-2", "ERR-3", "AUTH-1", "AUTH-4"},
	"no-ack-check":  {"TRN-8", "ACK-1", "ACK-2", "RDY-2", "ERR-3", "AUTH-4"},
	"no-cloexec":    {"TRN-4"},
	"one-cmsg":      {"TRN-6", "RCV-6"},
	"ready-on-ack":  {"RDY-2", "RDY-3"},
	"reorder":       {"TRN-1", "TRN-2", "TRN-6", "SND-2", "RCV-1", "RCV-6"},
	"truncate-meta": {"SND-5"},
	"trust-welcome": {"NEG-4"},
	"wrong-fd":      {"TRN-10", "SND-2", "RCV-1", "RCV-7", "ACK-1", "ACK-2", "RDY-2"},
	// An adapter that never says done fails every check: a run that does
	// not end with done proves nothing (every requirement a spec names).
	"exit-early": nil,
}

func mutantNames() []string {
	var names []string
	for m := range mutantBreaks {
		names = append(names, m)
	}
	sort.Strings(names)
	return names
}

// listed returns every requirement some spec names, from --list.
func listed() []string {
	GinkgoHelper()
	out, err := exec.Command(bin.cli, "--list").Output()
	Expect(err).NotTo(HaveOccurred())
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var s conformance.SpecInfo
		Expect(json.Unmarshal(sc.Bytes(), &s)).To(Succeed())
		for _, l := range s.Labels {
			if id, ok := strings.CutPrefix(l, "req:"); ok {
				seen[id] = true
			}
		}
	}
	var ids []string
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

var _ = Describe("the suite against known implementations", Ordered, ContinueOnFailure, Label("mutants", "slow"), func() {
	var (
		runs     = map[string]*cliRun{}
		dir      string
		everyone []string
	)

	BeforeAll(func() {
		dir = GinkgoT().TempDir()
		jobs := map[string][]string{"reference": adapterArgs(bin.reference)}
		for _, m := range mutantNames() {
			jobs["mutant "+m] = adapterArgs(bin.mutants + " --mutant " + m)
		}
		xfail := filepath.Join(dir, "xfail")
		Expect(os.WriteFile(xfail, []byte("# known\nAUTH-1\n"), 0o644)).To(Succeed())
		jobs["xpass"] = append(adapterArgs(bin.mutants+" --mutant none"), "--expected-failures", xfail)
		jobs["xfail"] = append(adapterArgs(bin.mutants+" --mutant any-uid"), "--expected-failures", xfail)

		// The runs spend most of their time waiting for deadlines: four
		// at a time keep two cores busy enough.
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for name, args := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				r := runCLI(dir, strings.ReplaceAll(name, " ", "-"), args...)
				mu.Lock()
				runs[name] = r
				mu.Unlock()
			}()
		}
		wg.Wait()
		everyone = listed()
	})

	It("passes the reference adapter on every MUST and SHOULD", func() {
		r := runs["reference"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		Expect(r.failing()).To(BeEmpty(), r.describe())
		Expect(r.result.IDs(conformance.VerdictSkipped)).To(BeEmpty(), r.describe())
		Expect(r.result.Passed).To(BeTrue(), r.describe())
		Expect(r.code).To(BeZero(), r.describe())
	})

	for _, m := range mutantNames() {
		It("fails mutant "+m+" on exactly the requirements it breaks", func() {
			r := runs["mutant "+m]
			Expect(r.err).NotTo(HaveOccurred(), r.describe())
			want := mutantBreaks[m]
			if m == "exit-early" {
				want = everyone
			}
			Expect(r.failing()).To(ConsistOf(want), r.describe())
			if len(want) == 0 {
				Expect(r.code).To(BeZero(), r.describe())
			} else {
				Expect(r.code).To(Equal(1), r.describe())
				Expect(r.result.Passed).To(BeFalse(), r.describe())
			}
		})
	}

	It("reports an expected failure that passes, and fails the run", func() {
		r := runs["xpass"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		Expect(r.result.IDs(conformance.VerdictUnexpectedPass)).To(Equal([]string{"AUTH-1"}), r.describe())
		Expect(r.output).To(ContainSubstring("listed as an expected failure, but every check passed"))
		Expect(r.code).To(Equal(1), r.describe())
	})

	It("passes a run whose only failure is expected", func() {
		r := runs["xfail"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		Expect(r.result.IDs(conformance.VerdictExpectedFail)).To(Equal([]string{"AUTH-1"}), r.describe())
		Expect(r.failing()).To(BeEmpty(), r.describe())
		Expect(r.code).To(BeZero(), r.describe())
	})
})

var _ = Describe("traceability", func() {
	It("checks every MUST with at least one spec, and names only known requirements", func() {
		names := listed()
		known := map[string]bool{}
		for _, q := range conformance.Requirements() {
			known[q.ID] = true
			if q.Level == conformance.Must {
				Expect(names).To(ContainElement(q.ID), "no spec checks %s (MUST)", q.ID)
			}
		}
		for _, id := range names {
			Expect(known).To(HaveKey(id), "a spec names %s, which spec/requirements.yaml does not have", id)
		}
	})

	It("labels every spec with its requirements, their one level and the adapter role", func() {
		out, err := exec.Command(bin.cli, "--list").Output()
		Expect(err).NotTo(HaveOccurred())
		sc := bufio.NewScanner(bytes.NewReader(out))
		n := 0
		for sc.Scan() {
			var s conformance.SpecInfo
			Expect(json.Unmarshal(sc.Bytes(), &s)).To(Succeed())
			var reqs, levels, iuts int
			for _, l := range s.Labels {
				switch {
				case strings.HasPrefix(l, "req:"):
					reqs++
				case strings.HasPrefix(l, "level:"):
					levels++
				case strings.HasPrefix(l, "iut:"):
					iuts++
				}
			}
			Expect(reqs).To(BeNumerically(">=", 1), s.Name)
			Expect(levels).To(Equal(1), s.Name)
			Expect(iuts).To(Equal(1), s.Name)
			n++
		}
		Expect(n).To(BeNumerically(">", 100))
	})
})
