//go:build linux

package harnesstest

import (
	"os"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/gracefulfd/graceful/harness"
)

func TestMain(m *testing.M) { os.Exit(Main(m, nil)) }

func TestHarnesstest(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "harnesstest")
}

var _ = Describe("harnesstest", Label("harness"), Repeat(), func() {
	DescribeTable("reads go test's -count from the command line",
		func(args string, want int) {
			Expect(countFromArgs(strings.Fields(args))).To(Equal(want))
		},
		Entry("absent", "-test.v -test.run=X", 1),
		Entry("with =", "-test.count=20", 20),
		Entry("as the next argument", "-test.count 7", 7),
		Entry("with two dashes", "--test.count=3", 3),
		Entry("one", "-test.count=1", 1),
		Entry("not a number", "-test.count=many", 1),
		Entry("a helper's argument", "test.count=9", 1),
	)

	It("writes whole lines, each with the process's label", func() {
		out := gbytes.NewBuffer()
		w := &prefixWriter{w: out, prefix: "[a] "}
		w.Write([]byte("one\ntw"))
		Expect(string(out.Contents())).To(Equal("[a] one\n"))
		w.setPrefix("[a 1] ")
		w.Write([]byte("o\nthree\nfour"))
		Expect(string(out.Contents())).To(Equal("[a] one\n[a 1] two\n[a 1] three\n"))
		w.flush()
		Expect(string(out.Contents())).To(Equal("[a] one\n[a 1] two\n[a 1] three\n[a 1] four\n"))
	})

	It("kills and reaps what Start started, in the spec's cleanup", func() {
		var p *harness.Process
		DeferCleanup(func() {
			exit, exited := p.Exit()
			Expect(exited).To(BeTrue(), "reaped by Start's cleanup, which ran first")
			Expect(exit.Success()).To(BeFalse())
		})
		p = Start(harness.Cmd{Path: "/bin/sleep", Args: []string{"600"}})
		Expect(p.Pid()).To(BeNumerically(">", 0))
	})
})
