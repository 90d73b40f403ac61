//go:build linux

// The units beside this file are checked by systemd's own parser, with the
// binaries they name built and in place.
package systemd_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
)

func TestUnits(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "systemd units")
}

var _ = Describe("the example's systemd units", func() {
	DescribeTable("pass systemd-analyze verify",
		func(unit string) {
			analyze, err := exec.LookPath("systemd-analyze")
			if err != nil {
				Skip("systemd-analyze is not installed")
			}
			gs, err := gexec.Build("github.com/gracefulfd/graceful/cmd/graceful-supervisor")
			Expect(err).NotTo(HaveOccurred())
			example, err := gexec.Build("github.com/gracefulfd/graceful/example")
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(gexec.CleanupBuildArtifacts)

			text, err := os.ReadFile(unit)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(text)).To(ContainSubstring("/usr/local/bin/graceful-example"))
			text = []byte(strings.NewReplacer(
				"/usr/local/bin/graceful-supervisor", gs,
				"/usr/local/bin/graceful-example", example,
			).Replace(string(text)))
			path := filepath.Join(GinkgoT().TempDir(), unit)
			Expect(os.WriteFile(path, text, 0o644)).To(Succeed())

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, analyze, "verify", "--man=no", path).CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "%s", out)
			Expect(strings.TrimSpace(string(out))).To(BeEmpty())
		},
		Entry("under graceful-supervisor", "graceful-example.service"),
		Entry("directly", "graceful-example-direct.service"),
	)
})
