//go:build linux

package graceful

import (
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

var _ = ginkgo.Describe("the frameConn pool", func() {
	ginkgo.DescribeTable("keeps buffers of up to 64 KiB for another session, and lets larger ones go",
		func(grow func(fc *frameConn, size int)) {
			for _, c := range []struct {
				size int
				kept bool
			}{{0, true}, {maxPooled, true}, {maxPooled + 1, false}, {4 * maxPooled, false}} {
				fc := new(frameConn)
				grow(fc, c.size)
				gomega.Expect(fc.poolable()).To(gomega.Equal(c.kept), "a buffer of %d bytes", c.size)
			}
		},
		ginkgo.Entry("the frames to write", func(fc *frameConn, size int) { fc.out = make([]byte, 0, size) }),
		ginkgo.Entry("the decoder's", func(fc *frameConn, size int) { fc.dec.Space(size) }),
		ginkgo.Entry("the set's metadata", func(fc *frameConn, size int) { fc.arena = make([]byte, 0, size) }),
	)
})
