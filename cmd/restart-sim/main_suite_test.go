//go:build linux

package main_test

import (
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
)

func TestRestartSim(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "restart-sim end to end")
}

// binary is restart-sim; example the example web server, a service of
// the user's for restart-sim to drive.
var binary, example string

var _ = SynchronizedBeforeSuite(func() []byte {
	path, err := gexec.Build("github.com/gracefulfd/graceful/cmd/restart-sim", buildFlags...)
	Expect(err).NotTo(HaveOccurred())
	ex, err := gexec.Build("github.com/gracefulfd/graceful/example", buildFlags...)
	Expect(err).NotTo(HaveOccurred())
	return []byte(path + "\n" + ex)
}, func(paths []byte) {
	binary, example, _ = strings.Cut(string(paths), "\n")
})

var _ = SynchronizedAfterSuite(func() {
	gexec.KillAndWait()
}, func() {
	gexec.CleanupBuildArtifacts()
})
