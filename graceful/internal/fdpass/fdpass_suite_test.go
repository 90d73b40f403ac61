package fdpass_test

import (
	"os"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestFdpass(t *testing.T) {
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	// Mutation testing (scripts/mutation.sh) stops at the first failure.
	suiteConfig.FailFast = suiteConfig.FailFast || os.Getenv("GRACEFUL_FAIL_FAST") == "1"
	RunSpecs(t, "fdpass", suiteConfig, reporterConfig)
}
