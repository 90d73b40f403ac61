package conformance

import (
	_ "embed"
	"fmt"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

//go:generate cp ../spec/requirements.yaml ../spec/adapter.schema.json .

// requirementsYAML is a copy of spec/requirements.yaml; a test fails when
// the two differ.
//
//go:embed requirements.yaml
var requirementsYAML []byte

// Level is a requirement's RFC 2119 keyword.
type Level string

// Requirement levels.
const (
	Must   Level = "MUST"
	Should Level = "SHOULD"
	May    Level = "MAY"
)

// Requirement is one numbered requirement of spec/protocol.md.
type Requirement struct {
	ID      string `yaml:"id" json:"id"`
	Level   Level  `yaml:"level" json:"level"`
	Role    string `yaml:"role" json:"role"` // sender, receiver or both
	Section string `yaml:"section" json:"section"`
	Text    string `yaml:"text" json:"text"`
}

var loadRequirements = sync.OnceValues(func() ([]Requirement, error) {
	var doc struct {
		Protocol     int           `yaml:"protocol"`
		Requirements []Requirement `yaml:"requirements"`
	}
	if err := yaml.Unmarshal(requirementsYAML, &doc); err != nil {
		return nil, fmt.Errorf("conformance: requirements.yaml: %w", err)
	}
	return doc.Requirements, nil
})

// Requirements returns every requirement of the protocol, in document order.
func Requirements() []Requirement {
	reqs, err := loadRequirements()
	if err != nil {
		// The file is embedded and checked by the package's tests.
		panic(err)
	}
	return append([]Requirement(nil), reqs...)
}

// lookup returns the requirement with this ID.
func lookup(id string) (Requirement, bool) {
	for _, r := range Requirements() {
		if r.ID == id {
			return r, true
		}
	}
	return Requirement{}, false
}

// Label names used on every spec, so that --ginkgo.label-filter selects
// them: req:<ID> for each requirement checked, level:<LEVEL>, role:<role of
// the requirement>, and iut:<sender|receiver|pair> for the adapter role the
// spec runs.
const (
	labelReq   = "req:"
	labelLevel = "level:"
	labelRole  = "role:"
	labelIUT   = "iut:"
	// LabelSlow marks specs that take seconds (deadlines, large sets).
	LabelSlow = "slow"
)

// reqLabels returns the labels for a spec checking ids (space separated).
// Every ID must exist and all must share one level.
func reqLabels(ids string) ([]string, Level) {
	var labels []string
	var level Level
	roles := map[string]bool{}
	for _, id := range strings.Fields(ids) {
		r, ok := lookup(id)
		if !ok {
			panic(fmt.Sprintf("conformance: spec names unknown requirement %q", id))
		}
		if level != "" && r.Level != level {
			panic(fmt.Sprintf("conformance: spec mixes levels %s and %s (%s)", level, r.Level, ids))
		}
		level = r.Level
		labels = append(labels, labelReq+id)
		if !roles[r.Role] {
			roles[r.Role] = true
			labels = append(labels, labelRole+r.Role)
		}
	}
	if level == "" {
		panic("conformance: spec names no requirement")
	}
	return append(labels, labelLevel+string(level)), level
}
