//go:build linux

package generation

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/goleak"
)

func TestGeneration(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "restart-sim generation")
}

var _ = AfterSuite(func() {
	Expect(goleak.Find(goleak.IgnoreCurrent())).To(Succeed())
})
