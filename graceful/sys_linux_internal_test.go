//go:build linux

package graceful

import (
	"strings"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

var _ = ginkgo.Describe("bindPath", func() {
	ginkgo.It("is the path itself up to 107 bytes, the most sun_path holds, and through /proc/self/fd from 108", func() {
		parent := "/" + strings.Repeat("p", 104) // with "/s", 107 bytes
		gomega.Expect(bindPath(7, parent, "s")).To(gomega.Equal(parent + "/s"))
		gomega.Expect(bindPath(7, parent+"q", "s")).To(gomega.Equal("/proc/self/fd/7/s"))
	})
})
