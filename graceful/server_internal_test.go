//go:build linux

package graceful

import (
	"io"
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

var _ = ginkgo.Describe("a Server whose pending connections are mostly not yet checked", func() {
	ginkgo.It("closes a connection waiting for its HELLO only once MaxPending of them wait, the oldest first", func() {
		s := &Server{MaxPending: 2}
		pending := func(checked bool) (*accepted, net.Conn) {
			ours, theirs := net.Pipe()
			ginkgo.DeferCleanup(ours.Close)
			ginkgo.DeferCleanup(theirs.Close)
			ac := &accepted{c: ours, waiting: checked}
			ac.elem = s.pending.PushBack(ac)
			return ac, theirs
		}
		evict := func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.evictOldest(s.maxPending())
		}
		served, servedPeer := pending(true)
		pending(false) // a refused user's flood, not checked yet
		pending(false)

		gomega.Expect(evict()).To(gomega.BeFalse(), "a flood of unchecked connections closed one that waits for its HELLO")
		gomega.Expect(served.evicted).To(gomega.BeFalse())

		second, _ := pending(true)
		gomega.Expect(evict()).To(gomega.BeTrue())
		gomega.Expect(served.evicted).To(gomega.BeTrue(), "the oldest waiting is the one closed")
		gomega.Expect(second.evicted).To(gomega.BeFalse())
		_, err := servedPeer.Read(make([]byte, 1))
		gomega.Expect(err).To(gomega.MatchError(io.EOF))
	})
})
