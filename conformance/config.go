package conformance

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/onsi/ginkgo/v2"

	"github.com/gracefulfd/graceful/conformance/internal/procsys"
)

// Defaults for the zero values of Config.
const (
	// DefaultTimeout is the deadline of each blocking step the suite asks
	// of the implementation (timeout_ms in the adapter contract). Deadline
	// checks (TRN-8, RDY-3) wait for it to fire.
	DefaultTimeout = time.Second
	// DefaultParallel is how many scenarios run at once.
	DefaultParallel = 4
	// DefaultWait is how long the suite waits for any one answer of the
	// adapter or frame of the implementation before it calls it hung.
	DefaultWait = 15 * time.Second
)

// ErrConfig reports an unusable Config.
var ErrConfig = errors.New("conformance: bad config")

// Config says what to test and how.
type Config struct {
	// Adapter is the command of the adapter around the implementation
	// under test, with its arguments (spec/adapter.md). Required.
	Adapter []string
	// Reference is the command of a trusted implementation's adapter. When
	// set, hand-offs between it and the implementation under test run too,
	// in both directions; nil skips them (the suite's own protocol engine
	// plays the other side in every other check).
	Reference []string
	// Strict runs the checks of SHOULD-level requirements too. Without it
	// they are skipped.
	Strict bool
	// Timeout is the per-step deadline the suite asks the implementation
	// to use; 0 means DefaultTimeout.
	Timeout time.Duration
	// Wait bounds every wait of the suite for the adapter or the
	// implementation; 0 means DefaultWait. It must exceed the
	// implementation's deadlines, or deadline checks fail.
	Wait time.Duration
	// Log receives the adapters' stderr and the suite's narration; nil
	// means GinkgoWriter.
	Log io.Writer
	// Parallel is how many scenarios (each a few adapter processes,
	// mostly waiting) run at once, ahead of the specs that judge them;
	// 0 means DefaultParallel. 1 runs them one by one.
	Parallel int
	// AllowSkip lists requirements (IDs, or "all") whose checks may be
	// skipped because the machine cannot run them (not root, no kernel
	// support) without failing the run. A MUST skipped otherwise fails it.
	AllowSkip []string

	// filter is the label filter of the run (Run sets it); without it,
	// Ginkgo's configuration from the command line.
	filter    string
	filterSet bool
}

func (c Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// relaxed is the per-step deadline asked of the implementation in the
// checks that do not wait for one to pass: long enough that a loaded
// machine never makes one pass by accident, shorter than the suite waits.
func (c Config) relaxed() time.Duration {
	return max(c.timeout(), c.wait()/2)
}

func (c Config) wait() time.Duration {
	if c.Wait > 0 {
		return c.Wait
	}
	return DefaultWait
}

func (c Config) parallel() int {
	if c.Parallel > 0 {
		return c.Parallel
	}
	return DefaultParallel
}

func (c Config) labelFilter() string {
	if c.filterSet {
		return c.filter
	}
	suite, _ := ginkgo.GinkgoConfiguration()
	return suite.LabelFilter
}

func (c Config) check() error {
	if len(c.Adapter) == 0 {
		return errors.Join(ErrConfig, errors.New("no adapter command"))
	}
	if os.Geteuid() == procsys.OverflowUID() {
		// The implementation runs as the suite's user, and so does every
		// peer the suite plays: all would be refused (protocol AUTH-7).
		return errors.Join(ErrConfig, fmt.Errorf("the suite runs as the overflow uid %d: an implementation "+
			"that follows protocol AUTH-7 refuses every peer then; run it as another user", os.Geteuid()))
	}
	return nil
}
