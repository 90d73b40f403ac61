//go:build linux

package harness_test

import (
	"os"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// helpers are the child processes of this suite, by name.
var helpers = harness.Helpers{
	// the harness's own tests
	"echo":    echoHelper,
	"fail":    failHelper,
	"hang":    hangHelper,
	"env":     envHelper,
	"spawn":   spawnHelper,
	"output":  outputHelper,
	"whoami":  whoamiHelper,
	"inherit": inheritHelper,

	// hand-offs
	"listener-old": accounted(listenerOld),
	"listener-new": accounted(listenerNew),
	"stream-old":   accounted(streamOld),
	"stream-new":   accounted(streamNew),
	"udp-old":      accounted(udpOld),
	"udp-new":      accounted(udpNew),
	"append-old":   accounted(appendOld),
	"append-new":   accounted(appendNew),
	"reader-old":   accounted(readerOld),
	"reader-new":   accounted(readerNew),
	"many-old":     accounted(manyOld),
	"many-new":     accounted(manyNew),

	// hand-off faults
	"crash-new":      crashNew,
	"partial-sender": partialSender,
	"hang-hello":     accounted(hangHello),
	"hang-ready":     accounted(hangReady),
	"set-old":        accounted(setOld),
	"plain-new":      accounted(plainNew),
	"limited-new":    accounted(limitedNew),
}

func TestMain(m *testing.M) { os.Exit(harnesstest.Main(m, helpers)) }

func TestHarness(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(eventually)
	RunSpecs(t, "harness")
}

// trackLeaks makes the spec fail if it leaves descriptors or goroutines
// behind in this process.
func trackLeaks() { harnesstest.TrackLeaks(leakWait) }

// Deadlines of the specs: generous, because the machine is slow and
// shared, and only reached when something is broken.
const (
	waitExit   = 20 * time.Second
	leakWait   = 10 * time.Second
	eventually = 30 * time.Second
)

// nobody is the user a child runs as to be another uid than the tests.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// sharedExe is a copy of the test binary that nobody may run.
var sharedExe string

var _ = BeforeSuite(func() {
	dir, err := os.MkdirTemp("", "gf")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	sharedExe, err = harness.CopyExecutable(dir)
	Expect(err).NotTo(HaveOccurred())
})
