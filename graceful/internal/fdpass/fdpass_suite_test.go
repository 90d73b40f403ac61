package fdpass_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestFdpass(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "fdpass")
}
