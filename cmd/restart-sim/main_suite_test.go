//go:build linux

package main_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
)

func TestRestartSim(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "restart-sim end to end")
}

var binary string

var _ = SynchronizedBeforeSuite(func() []byte {
	path, err := gexec.Build("github.com/gracefulfd/graceful/cmd/restart-sim", buildFlags...)
	Expect(err).NotTo(HaveOccurred())
	return []byte(path)
}, func(path []byte) {
	binary = string(path)
})

var _ = SynchronizedAfterSuite(func() {
	gexec.KillAndWait()
}, func() {
	gexec.CleanupBuildArtifacts()
})
