package conformance_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The package's own tests: the suite's machinery, traceability, and the
// self-test that runs the suite against the reference adapter and every
// mutant (label "mutants"; it takes about a minute).
func TestConformance(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "conformance self-test")
}
