package conformance_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
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
	"github.com/gracefulfd/graceful/conformance/internal/mutants"
)

// updateTraceability rewrites TRACEABILITY.md from this run:
//
//	go test ./conformance -run TestConformance -args -update-traceability
var updateTraceability = flag.Bool("update-traceability", false, "rewrite conformance/TRACEABILITY.md from this run")

// binaries built once for the whole self-test.
var bin struct {
	cli, reference, mutants string
}

// prebuilt names a directory that holds the binaries already built
// (graceful-conformance, reference, mutants), for a run where go cannot
// build them (a test binary run as root or as another user).
const prebuilt = "GRACEFUL_CONFORMANCE_BIN"

var _ = SynchronizedBeforeSuite(func() []byte {
	if dir := os.Getenv(prebuilt); dir != "" {
		return []byte(strings.Join([]string{filepath.Join(dir, "graceful-conformance"),
			filepath.Join(dir, "reference"), filepath.Join(dir, "mutants")}, "\n"))
	}
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
	env    []string
	code   int
	result conformance.Result
	err    error
	output string
}

func (r *cliRun) failing() []string { return r.result.IDs(conformance.VerdictFail) }

func (r *cliRun) verdict(id string) conformance.RequirementResult {
	for _, q := range r.result.Requirements {
		if q.ID == id {
			return q
		}
	}
	return conformance.RequirementResult{}
}

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
func runCLI(dir, name string, env []string, args ...string) *cliRun {
	report := filepath.Join(dir, name+".json")
	r := &cliRun{args: append(args, "--json-report", report), env: env}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.cli, r.args...)
	cmd.Env = append(os.Environ(), env...)
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
// checks run too, against the Go reference, a short wait so that a
// hanging mutant costs seconds, and three scenarios at once (several runs
// share the machine).
func adapterArgs(adapter string) []string {
	args := []string{"--strict", "--reference", "builtin", "--wait", "10s", "--jobs", "3", "--adapter", adapter}
	if !isRoot() {
		// The checks that play another user skip; the runs as root
		// (CI runs this test with sudo too) judge them.
		args = append(args, "--allow-skip", "all")
	}
	return args
}

// referenceGaps are the requirements the Go library does not meet yet
// (testdata/reference-gaps).
func referenceGaps() []string {
	GinkgoHelper()
	ids, err := conformance.ReadIDs("testdata/reference-gaps")
	Expect(err).NotTo(HaveOccurred())
	return ids
}

// specList is every check of the suite, from --list.
func specList() []conformance.SpecInfo {
	GinkgoHelper()
	out, err := exec.Command(bin.cli, "--list").Output()
	Expect(err).NotTo(HaveOccurred())
	var specs []conformance.SpecInfo
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s conformance.SpecInfo
		Expect(json.Unmarshal(sc.Bytes(), &s)).To(Succeed())
		specs = append(specs, s)
	}
	return specs
}

func reqsOf(s conformance.SpecInfo) []string {
	var ids []string
	for _, l := range s.Labels {
		if id, ok := strings.CutPrefix(l, "req:"); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// listed returns every requirement some spec names.
func listed() []string {
	GinkgoHelper()
	seen := map[string]bool{}
	for _, s := range specList() {
		for _, id := range reqsOf(s) {
			seen[id] = true
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
		runs = map[string]*cliRun{}
		dir  string
	)

	BeforeAll(func() {
		dir = GinkgoT().TempDir()
		type job struct {
			env  []string
			args []string
		}
		jobs := map[string]job{}
		gaps := filepath.Join(dir, "gaps")
		Expect(os.WriteFile(gaps, []byte(strings.Join(referenceGaps(), "\n")+"\n"), 0o644)).To(Succeed())
		jobs["reference"] = job{args: append(adapterArgs(bin.reference), "--expected-failures", gaps)}
		jobs["mutant none"] = job{args: adapterArgs(bin.mutants + " --mutant none")}
		jobs["mutant exit-early"] = job{args: adapterArgs(bin.mutants + " --mutant exit-early")}
		// Each mutant against the checks of the requirement it breaks.
		for _, m := range mutants.Table {
			if m.ID == "" {
				continue
			}
			jobs["mutant "+m.Name] = job{args: append(adapterArgs(bin.mutants+" --mutant "+m.Name), "--ginkgo.label-filter", "req:"+m.ID)}
		}
		xfail := filepath.Join(dir, "xfail")
		Expect(os.WriteFile(xfail, []byte("# known\nFRM-2\n"), 0o644)).To(Succeed())
		jobs["xpass"] = job{args: append(adapterArgs(bin.mutants+" --mutant none"), "--expected-failures", xfail, "--ginkgo.label-filter", "req:FRM-2")}
		jobs["xfail"] = job{args: append(adapterArgs(bin.mutants+" --mutant ignore-flags"), "--expected-failures", xfail, "--ginkgo.label-filter", "req:FRM-2")}
		// A run that cannot play another user skips AUTH-1's checks: that
		// fails it, unless allowed.
		jobs["skipped"] = job{env: []string{"GRACEFUL_CONFORMANCE_UNPRIVILEGED=1"},
			args: []string{"--strict", "--wait", "5s", "--adapter", bin.mutants, "--ginkgo.label-filter", "req:AUTH-1"}}
		jobs["allowed"] = job{env: []string{"GRACEFUL_CONFORMANCE_UNPRIVILEGED=1"},
			args: []string{"--strict", "--wait", "5s", "--adapter", bin.mutants, "--allow-skip", "AUTH-1", "--ginkgo.label-filter", "req:AUTH-1"}}

		// The runs spend most of their time waiting for deadlines and
		// processes: six at a time, three scenarios each, keep two cores
		// busy; the checks ask for deadlines a loaded machine does not
		// reach by accident.
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 6)
		for name, j := range jobs {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				r := runCLI(dir, strings.ReplaceAll(name, " ", "-"), j.env, j.args...)
				mu.Lock()
				runs[name] = r
				mu.Unlock()
			}()
		}
		wg.Wait()
	})

	It("passes the reference adapter on every MUST and SHOULD, but the gaps it lists as expected failures", func() {
		r := runs["reference"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		Expect(r.failing()).To(BeEmpty(), r.describe())
		Expect(r.result.IDs(conformance.VerdictUnexpectedPass)).To(BeEmpty(), "a gap of testdata/reference-gaps is closed: remove it"+r.describe())
		Expect(r.result.Passed).To(BeTrue(), r.describe())
		Expect(r.code).To(BeZero(), r.describe())
	})

	It("passes the control (mutant none) on every requirement, strict", func() {
		r := runs["mutant none"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		Expect(r.failing()).To(BeEmpty(), r.describe())
		Expect(r.result.IDs(conformance.VerdictUntested)).To(Equal([]string{"SND-4"}), "only the MAY that no check can see goes untested"+r.describe())
		Expect(r.result.Passed).To(BeTrue(), r.describe())
		Expect(r.code).To(BeZero(), r.describe())
	})

	for _, m := range mutants.Table {
		if m.ID == "" {
			continue
		}
		It(fmt.Sprintf("fails mutant %s on %s, the requirement it breaks", m.Name, m.ID), func() {
			r := runs["mutant "+m.Name]
			Expect(r.err).NotTo(HaveOccurred(), r.describe())
			q := r.verdict(m.ID)
			if q.Verdict == conformance.VerdictSkipped && !isRoot() {
				Skip("needs root: the checks of " + m.ID + " that catch it play another user")
			}
			Expect(q.Verdict).To(Equal(conformance.VerdictFail), "%s: %s%s", m.Name, m.What, r.describe())
			if q.Level != conformance.May {
				Expect(r.code).To(Equal(1), "a failed %s fails the run%s", q.Level, r.describe())
			}
		})
	}

	It("fails an adapter that exits without done on every requirement a check names", func() {
		r := runs["mutant exit-early"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		var want []string
		for _, id := range listed() {
			q := r.verdict(id)
			if q.Verdict == conformance.VerdictSkipped && !isRoot() {
				continue // a root-only check, skipped
			}
			want = append(want, id)
		}
		Expect(r.failing()).To(ConsistOf(want), r.describe())
		Expect(r.code).To(Equal(1), r.describe())
	})

	It("reports an expected failure that passes, and fails the run", func() {
		r := runs["xpass"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		Expect(r.result.IDs(conformance.VerdictUnexpectedPass)).To(Equal([]string{"FRM-2"}), r.describe())
		Expect(r.output).To(ContainSubstring("listed as an expected failure, but every check passed"))
		Expect(r.code).To(Equal(1), r.describe())
	})

	It("passes a run whose only failure is expected", func() {
		r := runs["xfail"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		Expect(r.result.IDs(conformance.VerdictExpectedFail)).To(Equal([]string{"FRM-2"}), r.describe())
		Expect(r.failing()).To(BeEmpty(), r.describe())
		Expect(r.code).To(BeZero(), r.describe())
	})

	It("fails a run that skipped a MUST because it is not root, and says why", func() {
		r := runs["skipped"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		q := r.verdict("AUTH-1")
		Expect(q.Verdict).To(Equal(conformance.VerdictSkipped), r.describe())
		Expect(q.Why).To(ContainElement(ContainSubstring("needs root")), r.describe())
		Expect(r.output).To(ContainSubstring("--allow-skip"))
		Expect(r.result.Skipped).To(HaveKey("skipped"), r.describe())
		Expect(r.code).To(Equal(1), r.describe())
	})

	It("passes that run when the skip is allowed", func() {
		r := runs["allowed"]
		Expect(r.err).NotTo(HaveOccurred(), r.describe())
		q := r.verdict("AUTH-1")
		Expect(q.Verdict).To(Equal(conformance.VerdictSkipped), r.describe())
		Expect(q.Allowed).To(BeTrue(), r.describe())
		Expect(r.code).To(BeZero(), r.describe())
	})

	It("writes a traceability table that this run upholds (TRACEABILITY.md)", func() {
		table := traceability(specList(), runs)
		if *updateTraceability {
			Expect(os.WriteFile("TRACEABILITY.md", []byte(table.markdown()), 0o644)).To(Succeed())
		}
		committed, err := os.ReadFile("TRACEABILITY.md")
		Expect(err).NotTo(HaveOccurred(), "go test ./conformance -run TestConformance -args -update-traceability")
		old := parseTraceability(string(committed))
		// The checks and the mutants of every requirement are the suite's
		// and the registry's own: they must match exactly.
		Expect(old.static()).To(Equal(table.static()),
			"TRACEABILITY.md is out of date: go test ./conformance -run TestConformance -args -update-traceability")
		// Every proof it claims must hold in this run.
		for _, q := range old.reqs {
			for _, c := range q.checks {
				for _, m := range c.provedBy {
					if skippedIn(runs["mutant "+m], conformance.SuiteName+" "+c.name) {
						continue // a check this machine cannot run (not root)
					}
					Expect(table.proves(c.name, m)).To(BeTrue(), "TRACEABILITY.md says mutant %s makes %q fail; it did not in this run", m, c.name)
				}
			}
		}
	})
})

func isRoot() bool { return os.Geteuid() == 0 }

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
		n := 0
		for _, s := range specList() {
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
		Expect(n).To(BeNumerically(">", 400))
	})

	It("has a mutant for every requirement a check names, but the MAY ones, and at least 100 in all", func() {
		byID := map[string]int{}
		for _, m := range mutants.Table {
			byID[m.ID]++
		}
		for _, q := range conformance.Requirements() {
			if q.Level == conformance.May {
				continue
			}
			Expect(byID).To(HaveKey(q.ID), "no mutant breaks %s", q.ID)
		}
		Expect(len(mutants.Table)).To(BeNumerically(">=", 100))
		names := map[string]bool{}
		for _, m := range mutants.Table {
			Expect(names).NotTo(HaveKey(m.Name), "mutant %s twice", m.Name)
			names[m.Name] = true
		}
	})
})
