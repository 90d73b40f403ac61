//go:build linux

package graceful

import (
	"net"
	"path/filepath"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

var _ = ginkgo.Describe("ListenAndServe closed between its listen and its serve", func() {
	ginkgo.It("leaves nothing listening once Close has returned", func() {
		addr := filepath.Join(ginkgo.GinkgoT().TempDir(), "s")
		s := &Server{}
		ln, err := s.listen(addr) // the socket is in place; serve has not begun
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(s.Close()).To(gomega.Succeed())
		_, err = net.Dial("unix", addr)
		gomega.Expect(err).To(gomega.HaveOccurred(), "a connection reached the listener after Close")
		gomega.Expect(s.serve(ln, addr)).To(gomega.MatchError(ErrServerClosed))
	})
})
