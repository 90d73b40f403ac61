package conformance_test

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/gracefulfd/graceful/conformance"
	"github.com/gracefulfd/graceful/conformance/internal/mutants"
)

// traceTable is TRACEABILITY.md: per requirement, its checks, its mutants,
// and which of its mutants make each check fail.
type traceTable struct {
	reqs []*traceReq
}

type traceReq struct {
	id, level, role string
	mutants         []string
	checks          []*traceCheck
}

type traceCheck struct {
	name     string
	provedBy []string // mutants of the requirement that make it fail
}

// checkName is a spec's name without the suite's own prefix.
func checkName(full string) string {
	return strings.TrimPrefix(full, conformance.SuiteName+" ")
}

// traceability builds the table from the suite's checks and this run's
// mutant runs (each run against its requirement's checks).
func traceability(specs []conformance.SpecInfo, runs map[string]*cliRun) *traceTable {
	t := &traceTable{}
	byID := map[string]*traceReq{}
	for _, q := range conformance.Requirements() {
		r := &traceReq{id: q.ID, level: string(q.Level), role: q.Role}
		byID[q.ID] = r
		t.reqs = append(t.reqs, r)
	}
	for _, m := range mutants.Table {
		if r, ok := byID[m.ID]; ok {
			r.mutants = append(r.mutants, m.Name)
		}
	}
	for _, s := range specs {
		for _, id := range reqsOf(s) {
			r := byID[id]
			c := &traceCheck{name: checkName(s.Name)}
			for _, m := range r.mutants {
				if failedIn(runs["mutant "+m], s.Name) {
					c.provedBy = append(c.provedBy, m)
				}
			}
			r.checks = append(r.checks, c)
		}
	}
	for _, r := range t.reqs {
		sort.Slice(r.checks, func(i, j int) bool { return r.checks[i].name < r.checks[j].name })
	}
	return t
}

// failedIn reports whether spec failed in run.
func failedIn(run *cliRun, spec string) bool {
	if run == nil {
		return false
	}
	for _, q := range run.result.Requirements {
		for _, s := range q.Specs {
			if s.Name == spec && s.State == "failed" {
				return true
			}
		}
	}
	return false
}

// skippedIn reports whether spec was skipped in run because the machine
// could not run it.
func skippedIn(run *cliRun, spec string) bool {
	if run == nil {
		return false
	}
	for _, q := range run.result.Requirements {
		for _, s := range q.Specs {
			if s.Name == spec && s.State == "skipped" {
				return true
			}
		}
	}
	return false
}

// proves reports whether mutant m makes the check called name fail.
func (t *traceTable) proves(name, m string) bool {
	for _, r := range t.reqs {
		for _, c := range r.checks {
			if c.name == name && slices.Contains(c.provedBy, m) {
				return true
			}
		}
	}
	return false
}

// static is the table without its proofs: every requirement's checks and
// mutants.
func (t *traceTable) static() string {
	var b strings.Builder
	for _, r := range t.reqs {
		fmt.Fprintf(&b, "%s %s %s mutants=%v\n", r.id, r.level, r.role, r.mutants)
		for _, c := range r.checks {
			fmt.Fprintf(&b, "  %s\n", c.name)
		}
	}
	return b.String()
}

func (r *traceReq) proven() int {
	n := 0
	for _, c := range r.checks {
		if len(c.provedBy) > 0 {
			n++
		}
	}
	return n
}

const traceHeader = `# Traceability of the conformance suite

Generated, and checked, by the suite's self-test (conformance/selftest_test.go)
from the checks of ` + "`graceful-conformance --list`" + `, the mutants of
conformance/internal/mutants, and a run of each mutant against the checks of
the requirement it breaks. Regenerate with:

    go test ./conformance -run TestConformance -args -update-traceability

A check counts only when a mutant proves that it can fail, for the
requirement it names: "proven by" lists the mutants of that requirement that
make it fail. A requirement with no proven check is flagged NONE; a check no
mutant makes fail is marked UNPROVEN. The self-test fails when the checks or
mutants here differ from the suite's, or when a proof claimed here does not
hold.
`

// markdown renders the table.
func (t *traceTable) markdown() string {
	var b strings.Builder
	b.WriteString(traceHeader)
	checks, proven := 0, 0
	var none []string
	b.WriteString("\n## Summary\n\n| requirement | level | role | checks | proven | mutants | |\n| --- | --- | --- | ---: | ---: | ---: | --- |\n")
	for _, r := range t.reqs {
		flag := ""
		if r.proven() == 0 {
			flag = "NONE"
			none = append(none, r.id)
		}
		checks += len(r.checks)
		proven += r.proven()
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d | %s |\n", r.id, r.level, r.role, len(r.checks), r.proven(), len(r.mutants), flag)
	}
	faults := 0
	for _, m := range mutants.Table {
		if m.ID != "" {
			faults++
		}
	}
	fmt.Fprintf(&b, "\n%d checks of a requirement, %d proven by a mutant of it (%d mutants in all, besides the control and an adapter that never says done). Requirements with no proven check: %s.\n",
		checks, proven, faults, orNone(none))
	for _, r := range t.reqs {
		fmt.Fprintf(&b, "\n## %s (%s, %s)\n\nMutants: %s\n", r.id, r.level, r.role, orNone(r.mutants))
		if len(r.checks) == 0 {
			b.WriteString("\nNo check.\n")
			continue
		}
		b.WriteString("\n| check | proven by |\n| --- | --- |\n")
		for _, c := range r.checks {
			by := strings.Join(c.provedBy, ", ")
			if by == "" {
				by = "UNPROVEN"
			}
			fmt.Fprintf(&b, "| %s | %s |\n", strings.ReplaceAll(c.name, "|", `\|`), by)
		}
	}
	return b.String()
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

// parseTraceability reads a table written by markdown.
func parseTraceability(doc string) *traceTable {
	t := &traceTable{}
	var cur *traceReq
	inTable := false
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(line, "## ") && line != "## Summary":
			var id, rest string
			id, rest, _ = strings.Cut(strings.TrimPrefix(line, "## "), " ")
			level, role, _ := strings.Cut(strings.Trim(rest, "()"), ", ")
			cur = &traceReq{id: id, level: level, role: role}
			t.reqs = append(t.reqs, cur)
			inTable = false
		case cur == nil:
		case strings.HasPrefix(line, "Mutants: "):
			if ms := strings.TrimPrefix(line, "Mutants: "); ms != "none" {
				cur.mutants = strings.Split(ms, ", ")
			}
		case line == "| --- | --- |":
			inTable = true
		case inTable && strings.HasPrefix(line, "| "):
			cells := splitRow(line)
			if len(cells) != 2 {
				continue
			}
			c := &traceCheck{name: cells[0]}
			if cells[1] != "UNPROVEN" {
				c.provedBy = strings.Split(cells[1], ", ")
			}
			cur.checks = append(cur.checks, c)
		}
	}
	return t
}

// splitRow splits a table row on its unescaped bars.
func splitRow(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "| "), " |")
	var cells []string
	var cell strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cell.WriteByte('|')
			i++
		case strings.HasPrefix(line[i:], " | "):
			cells = append(cells, cell.String())
			cell.Reset()
			i += 2
		default:
			cell.WriteByte(line[i])
		}
	}
	return append(cells, cell.String())
}
