package main_test

import (
	"testing"

	"github.com/onsi/gomega/gexec"

	"github.com/gracefulfd/graceful/conformance"
)

// TestConformance runs the whole suite against this adapter through the
// Go API, as a Go implementation would in its own tests.
func TestConformance(t *testing.T) {
	adapter, err := gexec.Build("github.com/gracefulfd/graceful/conformance/adapters/reference")
	if err != nil {
		t.Fatal(err)
	}
	defer gexec.CleanupBuildArtifacts()
	conformance.Test(t, conformance.Config{Adapter: []string{adapter}, Strict: true})
}
