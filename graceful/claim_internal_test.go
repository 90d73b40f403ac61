//go:build linux

package graceful

import (
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

var _ = ginkgo.Describe("claiming the set while another session holds it", func() {
	var s *Server
	ginkgo.BeforeEach(func() {
		s = &Server{}
		saved := busyWait
		ginkgo.DeferCleanup(func() { busyWait = saved })
		gomega.Expect(s.claim()).To(gomega.BeTrue(), "a free set is claimed at once")
	})

	ginkgo.It("is granted as soon as that session ends, within busyWait", func() {
		busyWait = time.Minute
		claimed := make(chan bool, 1)
		go func() { claimed <- s.claim() }()
		gomega.Eventually(func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.released != nil
		}).Should(gomega.BeTrue(), "the second claim waits")
		gomega.Consistently(claimed, 20*time.Millisecond).ShouldNot(gomega.Receive(), "granted while the set was held")
		s.release()
		gomega.Eventually(claimed, 5*time.Second).Should(gomega.Receive(gomega.BeTrue()))
		s.release()
		gomega.Expect(s.claim()).To(gomega.BeTrue(), "the set is free again")
	})

	ginkgo.It("is refused (BUSY) once busyWait has passed", func() {
		busyWait = time.Millisecond
		gomega.Expect(s.claim()).To(gomega.BeFalse())
		s.release()
		gomega.Expect(s.claim()).To(gomega.BeTrue())
	})
})
