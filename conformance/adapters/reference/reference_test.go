package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onsi/gomega/gexec"

	"github.com/gracefulfd/graceful/conformance"
)

// TestConformance runs the whole suite against this adapter through the
// Go API (conformance.Run), as a Go implementation would in its own
// tests, strict, with itself as the reference peer. The requirements the
// library does not meet yet are expected failures (a gap that closes
// fails the test: remove it from the list).
func TestConformance(t *testing.T) {
	adapter := filepath.Join(os.Getenv("GRACEFUL_CONFORMANCE_BIN"), "reference")
	if os.Getenv("GRACEFUL_CONFORMANCE_BIN") == "" {
		var err error
		if adapter, err = gexec.Build("github.com/gracefulfd/graceful/conformance/adapters/reference"); err != nil {
			t.Fatal(err)
		}
		defer gexec.CleanupBuildArtifacts()
	}
	cfg := conformance.Config{Adapter: []string{adapter}, Reference: []string{adapter}, Strict: true}
	if os.Geteuid() != 0 {
		// The checks that play another user skip without root.
		cfg.AllowSkip = []string{"all"}
	}
	res, err := conformance.Run(cfg, conformance.RunOptions{ExpectedFailures: gaps(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Passed {
		var b strings.Builder
		res.WriteTable(&b)
		t.Fatalf("the reference adapter fails the suite:\n%s", b.String())
	}
}

// gaps reads conformance/testdata/reference-gaps.
func gaps(t *testing.T) []string {
	ids, err := conformance.ReadIDs("../../testdata/reference-gaps")
	if err != nil {
		t.Fatal(err)
	}
	return ids
}
