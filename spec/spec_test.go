package spec

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.yaml.in/yaml/v3"
)

// update rewrites requirements.yaml from protocol.md:
//
//	go test ./spec -update && go generate ./conformance
var update = flag.Bool("update", false, "rewrite requirements.yaml from protocol.md")

const yamlHeader = `# Every requirement of spec/protocol.md, in document order.
# spec/spec_test.go fails when this list and the document drift apart (an ID
# added or removed on one side, or a different level, role, section or text).
# The conformance suite (conformance/) names these IDs in its labels and
# verdicts; conformance/requirements.yaml is a byte-for-byte copy (go generate).
# After editing protocol.md: go test ./spec -update && go generate ./conformance
#
# level: MUST, SHOULD or MAY (RFC 2119). role: the side the requirement binds:
# sender, receiver, or both.
protocol: 1
revision: "1.1"
requirements:
`

// renderYAML writes reqs in the layout of requirements.yaml.
func renderYAML(reqs []requirement) []byte {
	var b strings.Builder
	b.WriteString(yamlHeader)
	for _, r := range reqs {
		b.WriteString("  - id: " + r.ID + "\n")
		b.WriteString("    level: " + r.Level + "\n")
		b.WriteString("    role: " + r.Role + "\n")
		b.WriteString("    section: " + strconv.Quote(r.Section) + "\n")
		b.WriteString("    text: " + strconv.Quote(r.Text) + "\n")
	}
	return []byte(b.String())
}

// requirement is one entry of requirements.yaml, or one requirement found in
// protocol.md.
type requirement struct {
	ID      string `yaml:"id"`
	Level   string `yaml:"level"`
	Role    string `yaml:"role"`
	Section string `yaml:"section"`
	Text    string `yaml:"text"`
}

type requirementsFile struct {
	Protocol     int           `yaml:"protocol"`
	Revision     string        `yaml:"revision"`
	Requirements []requirement `yaml:"requirements"`
}

var (
	headingRe = regexp.MustCompile(`^#{2,3} (\d+(?:\.\d+)*\.? .+)$`)
	// A requirement opens a bullet: - **[ID] LEVEL (role)** text...
	requirementRe = regexp.MustCompile(`^- \*\*\[([A-Z]+-\d+)\] (MUST|SHOULD|MAY) \((sender|receiver|both)\)\*\* ?(.*)$`)
	// A line that starts like a requirement (a bold bracketed ID after an
	// optional list marker), to catch one written in an unexpected shape.
	anyIDRe = regexp.MustCompile(`^\s*(?:[-*+]|\d+\.)?\s*\*\*\[([A-Z]+-\d+)\]`)
)

// parseProtocol reads the requirements out of protocol.md: the bullet that
// opens with the ID, and its continuation lines (indented) up to the next
// bullet or blank line.
func parseProtocol(doc []byte) (reqs []requirement, mentioned []string) {
	var section string
	var cur *requirement
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		for _, m := range anyIDRe.FindAllStringSubmatch(line, -1) {
			mentioned = append(mentioned, m[1])
		}
		if m := headingRe.FindStringSubmatch(line); m != nil {
			section, cur = m[1], nil
			continue
		}
		if m := requirementRe.FindStringSubmatch(line); m != nil {
			reqs = append(reqs, requirement{ID: m[1], Level: m[2], Role: m[3], Section: section, Text: m[4]})
			cur = &reqs[len(reqs)-1]
			continue
		}
		if cur != nil && strings.HasPrefix(line, "  ") && strings.TrimSpace(line) != "" {
			cur.Text += " " + strings.TrimSpace(line)
			continue
		}
		cur = nil
	}
	Expect(sc.Err()).NotTo(HaveOccurred())
	return reqs, mentioned
}

func normalise(s string) string { return strings.Join(strings.Fields(s), " ") }

func ids(reqs []requirement) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.ID
	}
	return out
}

var _ = Describe("protocol.md and requirements.yaml", func() {
	var (
		doc       []requirement
		mentioned []string
		yml       requirementsFile
	)

	BeforeEach(func() {
		md, err := os.ReadFile("protocol.md")
		Expect(err).NotTo(HaveOccurred())
		doc, mentioned = parseProtocol(md)
		if *update {
			Expect(os.WriteFile("requirements.yaml", renderYAML(doc), 0o644)).To(Succeed())
		}

		raw, err := os.ReadFile("requirements.yaml")
		Expect(err).NotTo(HaveOccurred())
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		yml = requirementsFile{}
		Expect(dec.Decode(&yml)).To(Succeed())
	})

	It("finds requirements in the document (the parser works)", func() {
		Expect(len(doc)).To(BeNumerically(">=", 40))
		Expect(ids(doc)).To(ContainElements("TRN-1", "FRM-1", "NEG-1", "SND-1", "RCV-1", "ACK-1", "RDY-1", "META-1", "ERR-1", "AUTH-4"))
	})

	It("writes every requirement ID in the document in the one parsable shape", func() {
		Expect(mentioned).To(ConsistOf(ids(doc)), "an ID in bold brackets that is not a well-formed requirement bullet")
	})

	It("uses every ID once", func() {
		seen := map[string]bool{}
		for _, id := range ids(yml.Requirements) {
			Expect(seen).NotTo(HaveKey(id), "requirements.yaml repeats %s", id)
			seen[id] = true
		}
		seen = map[string]bool{}
		for _, id := range ids(doc) {
			Expect(seen).NotTo(HaveKey(id), "protocol.md repeats %s", id)
			seen[id] = true
		}
	})

	It("names the document's version and revision", func() {
		md, err := os.ReadFile("protocol.md")
		Expect(err).NotTo(HaveOccurred())
		title, _, _ := strings.Cut(string(md), "\n")
		Expect(title).To(HaveSuffix(fmt.Sprintf("version %d, revision %s", yml.Protocol, yml.Revision)))
	})

	It("lists exactly the document's IDs, in the document's order", func() {
		Expect(yml.Protocol).To(Equal(1))
		Expect(ids(yml.Requirements)).To(Equal(ids(doc)))
	})

	It("gives each requirement the document's level, role, section and text", func() {
		byID := map[string]requirement{}
		for _, r := range yml.Requirements {
			byID[r.ID] = r
		}
		for _, want := range doc {
			got, ok := byID[want.ID]
			Expect(ok).To(BeTrue(), "requirements.yaml lacks %s", want.ID)
			Expect(got.Level).To(Equal(want.Level), "level of %s", want.ID)
			Expect(got.Role).To(Equal(want.Role), "role of %s", want.ID)
			Expect(got.Section).To(Equal(want.Section), "section of %s", want.ID)
			Expect(normalise(got.Text)).To(Equal(normalise(want.Text)), "text of %s", want.ID)
		}
	})

	It("uses only the known levels and roles", func() {
		for _, r := range yml.Requirements {
			Expect(r.Level).To(BeElementOf("MUST", "SHOULD", "MAY"), r.ID)
			Expect(r.Role).To(BeElementOf("sender", "receiver", "both"), r.ID)
			Expect(r.ID).To(MatchRegexp(`^[A-Z]+-\d+$`))
		}
	})
})

var _ = Describe("the parser", func() {
	It("renders YAML that reads back the same", func() {
		reqs := []requirement{{ID: "TRN-1", Level: "MUST", Role: "both", Section: "2. Transport", Text: "Use `x`: \"quoted\"."}}
		var back requirementsFile
		Expect(yaml.Unmarshal(renderYAML(reqs), &back)).To(Succeed())
		Expect(back.Requirements).To(Equal(reqs))
	})

	It("notices a requirement whose level or role drifted", func() {
		reqs, _ := parseProtocol([]byte("## 2. Transport\n\n- **[TRN-1] SHOULD (sender)** Use\n  a socket.\n- **[TRN-2] MUST (both)** Read.\n\nnot part of it\n"))
		Expect(reqs).To(Equal([]requirement{
			{ID: "TRN-1", Level: "SHOULD", Role: "sender", Section: "2. Transport", Text: "Use a socket."},
			{ID: "TRN-2", Level: "MUST", Role: "both", Section: "2. Transport", Text: "Read."},
		}))
	})
})
