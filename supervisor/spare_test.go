//go:build linux

package supervisor_test

import (
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/internal/svctest"
	"github.com/gracefulfd/graceful/supervisor"
)

var _ = Describe("a spare (Config.Spare)", func() {
	// withSpare starts a supervisor with a spare, whose generations store
	// their listener and hand it over at a hand-off socket, and waits
	// until generation 1 serves and spare n waits for its turn.
	withSpare := func(n int) (*running, supervisor.Generation, supervisor.Generation) {
		GinkgoHelper()
		handoff := filepath.Join(GinkgoT().TempDir(), "handoff.sock")
		r := start(supervisor.Config{Handoff: handoff, Spare: true}, "-fdstore", "-handoff", handoff)
		g1 := r.serving(1)
		Eventually(func() []string { return r.status().Stored }).Should(Equal([]string{"tcp"}))
		return r, g1, r.spareWaiting(n)
	}

	It("needs Config.Handoff", func() {
		_, err := supervisor.New(supervisor.Config{Path: service, Spare: true})
		Expect(err).To(MatchError(ContainSubstring("Config.Spare needs Config.Handoff")))
	})

	DescribeTable("takes over when the serving generation dies: the spare's process serves the same listener, no connection is refused, and a new spare waits",
		func(kill func(r *running, g supervisor.Generation)) {
			r, g1, sp := withSpare(2)
			Expect(sp.PID).NotTo(Equal(g1.PID))

			stop := make(chan struct{})
			l := svctest.Dial("tcp", addr(g1), stop, 100000)
			kill(r, g1)
			g2 := r.serving(2)
			Expect(g2.PID).To(Equal(sp.PID), "generation 2 is not the spare's process")
			Expect(addr(g2)).To(Equal(addr(g1)))
			Expect(svctest.Answer("tcp", addr(g2))).To(Equal(fmt.Sprintf("pid %d", g2.PID)))
			close(stop)
			l.Wait()
			Expect(l.Refused).To(BeZero(), "connections refused")

			By("starting the next spare once generation 2 serves")
			sp3 := r.spareWaiting(3)
			Expect(sp3.PID).NotTo(Equal(g2.PID))
			Eventually(r.events.steps).Should(Equal([]string{
				"started 1", "stored 1", "ready 1", "spare 2", "died 1", "backoff 0s", "started 2", "ready 2", "spare 3",
			}))
		},
		Entry("SIGKILL", sigkill),
		Entry("a panic", panicking),
	)

	It("is dismissed by a restart, which starts the program afresh; the spare exits, and a new one waits after", func() {
		r, g1, sp := withSpare(2)
		g, err := restart(r)
		Expect(err).NotTo(HaveOccurred())
		Expect(g.N).To(Equal(3), "the spare's number is spent")
		Expect(g.PID).NotTo(Equal(sp.PID))
		Expect(addr(g)).To(Equal(addr(g1)))
		Eventually(r.errs).Should(gbytes.Say(`\[gen 2\] testservice: .*spare dismissed before its turn came`))
		exited := r.events.one(supervisor.EventExited, 2)
		Expect(exited.Gen.State).To(Equal("retiring"))
		Expect(r.events.find(supervisor.EventStarted, 2)).To(BeEmpty(), "the dismissed spare was started")
		r.spareWaiting(4)
	})

	It("is started again when a restart that dismissed it fails and is rolled back", func() {
		handoff := filepath.Join(GinkgoT().TempDir(), "handoff.sock")
		r := start(supervisor.Config{Handoff: handoff, Spare: true, ReadyTimeout: time.Second}, "-fdstore", "-handoff", handoff)
		r.serving(1)
		r.spareWaiting(2)
		r.mode("hang") // generation 3 never says READY=1; a spare waits all the same
		_, err := restart(r)
		Expect(err).To(MatchError(supervisor.ErrRestartFailed))
		Expect(r.status().Serving.N).To(Equal(1))
		r.spareWaiting(4)
	})

	It("is dismissed when the supervisor stops: Run returns, and nothing of it is left", func() {
		r, _, sp := withSpare(2)
		r.Stop(syscall.SIGTERM)
		Expect(r.wait().err).NotTo(HaveOccurred())
		Expect(r.events.one(supervisor.EventExited, 2).Gen.PID).To(Equal(sp.PID))
		Expect(syscall.Kill(sp.PID, 0)).To(MatchError(syscall.ESRCH))
	})

	It("that exits before its turn is not replaced until a generation is ready; a crash meanwhile starts the program as without one", func() {
		r, g1, sp := withSpare(2)
		Expect(syscall.Kill(sp.PID, syscall.SIGKILL)).To(Succeed())
		Expect(r.events.one(supervisor.EventExited, 2).Exit.Signal).To(Equal(syscall.SIGKILL))
		Expect(r.status().Spare).To(BeNil())

		sigkill(r, g1)
		g3 := r.serving(3)
		Expect(addr(g3)).To(Equal(addr(g1)))
		Expect(r.events.one(supervisor.EventStarted, 3).Gen.PID).To(Equal(g3.PID))
		r.spareWaiting(4)
	})

	It("takes over when its turn came before it waited: a spare slow to start reads the turn the supervisor wrote", func() {
		handoff := filepath.Join(GinkgoT().TempDir(), "handoff.sock")
		fifo := filepath.Join(GinkgoT().TempDir(), "fifo")
		Expect(unix.Mkfifo(fifo, 0o600)).To(Succeed())
		r := startMode("receive-after "+fifo, supervisor.Config{Handoff: handoff, Spare: true}, "-fdstore", "-handoff", handoff)
		Eventually(r.out).Should(gbytes.Say(`\[gen 1\] taking over once the FIFO opens`))
		openFIFO(fifo)
		g1 := r.serving(1)
		Eventually(func() []string { return r.status().Stored }).Should(Equal([]string{"tcp"}))

		Eventually(r.out).Should(gbytes.Say(`\[gen 2\] taking over once the FIFO opens`))
		sp := r.status().Spare
		Expect(sp).NotTo(BeNil())
		Expect(r.status().SpareWaiting).To(BeFalse())
		sigkill(r, g1)
		Eventually(func() []map[string]any { return r.logs.with("spare takes over") }).ShouldNot(BeEmpty())
		r.mode("") // for the next spare, which starts once generation 2 is ready
		openFIFO(fifo)
		g2 := r.serving(2)
		Expect(g2.PID).To(Equal(sp.PID))
		Expect(addr(g2)).To(Equal(addr(g1)))
	})

	It("of a program that does not wait takes over as a restart would; the supervisor says so and starts no more spares", func() {
		handoff := filepath.Join(GinkgoT().TempDir(), "handoff.sock")
		r := startMode("no-spare", supervisor.Config{Handoff: handoff, Spare: true}, "-fdstore", "-handoff", handoff)
		g2 := r.serving(2) // generation 1 may have served only for a moment
		g1 := r.events.one(supervisor.EventReady, 1).Gen
		Expect(addr(g2)).To(Equal(addr(g1)))
		Expect(r.logs.with("spare took over unasked")).To(ConsistOf(HaveKeyWithValue("err",
			MatchError(ContainSubstring("generation 2, started as a spare, said READY=1 before its turn came")))))
		Eventually(func() []supervisor.Generation { return r.status().Retiring }).Should(BeEmpty())
		Expect(r.events.one(supervisor.EventExited, 1).Gen.State).To(Equal("retiring"))
		Expect(r.status().Spare).To(BeNil())
		Consistently(func() *supervisor.Generation { return r.status().Spare }, "300ms").Should(BeNil())
	})
})

// spareWaiting waits until spare n waits for its turn, and returns it.
func (r *running) spareWaiting(n int) supervisor.Generation {
	GinkgoHelper()
	var g supervisor.Generation
	Eventually(func() bool {
		st := r.status()
		if st.Spare == nil || !st.SpareWaiting {
			return false
		}
		g = *st.Spare
		return true
	}).Should(BeTrue(), "no spare waits")
	Expect(g.N).To(Equal(n))
	Expect(g.State).To(Equal("spare"))
	return g
}
