//go:build linux

package harness

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/goleak"
)

// ErrLeak: descriptors or goroutines were left behind.
var ErrLeak = errors.New("harness: leak")

// Snapshot is the list of a process's open descriptors at one moment.
type Snapshot struct {
	Pid int
	FDs []FD
}

// TakeSnapshot lists the open descriptors of process pid.
func TakeSnapshot(pid int) (Snapshot, error) {
	fds, err := ListFDs(pid)
	return Snapshot{Pid: pid, FDs: fds}, err
}

// Opened lists the descriptors of later that s did not have: a number
// that was not open, or is open on another file now.
func (s Snapshot) Opened(later Snapshot) []FD { return missing(later.FDs, s.FDs) }

// Closed lists the descriptors of s that later no longer has.
func (s Snapshot) Closed(later Snapshot) []FD { return missing(s.FDs, later.FDs) }

// missing returns the descriptors of a that b does not have.
func missing(a, b []FD) []FD {
	have := make(map[int]FileID, len(b))
	for _, fd := range b {
		have[fd.Num] = fd.ID
	}
	var out []FD
	for _, fd := range a {
		if id, ok := have[fd.Num]; !ok || id != fd.ID {
			out = append(out, fd)
		}
	}
	return out
}

// pollInterval is how often the Wait functions look again.
const pollInterval = 10 * time.Millisecond

// WaitNoneOpened waits up to timeout until process before.Pid has no
// descriptor that before did not have (closing can lag behind the event a
// test waits for). The error wraps ErrLeak and lists every such
// descriptor.
func WaitNoneOpened(before Snapshot, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		now, err := TakeSnapshot(before.Pid)
		if err != nil {
			return err
		}
		opened := before.Opened(now)
		if len(opened) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: pid %d still has %d descriptor(s) it did not have before (after %v):\n%s",
				ErrLeak, before.Pid, len(opened), timeout, FormatFDs(opened))
		}
		time.Sleep(pollInterval)
	}
}

// FormatFDs prints one descriptor per line, for failure messages.
func FormatFDs(fds []FD) string {
	var b strings.Builder
	for _, fd := range fds {
		fmt.Fprintf(&b, "\t%v\n", fd)
	}
	return b.String()
}

// Accounting records this process's descriptors and goroutines so that
// Check can tell what a piece of work left behind.
type Accounting struct {
	fds        Snapshot
	goroutines goleak.Option
}

// StartAccounting records this process's open descriptors and running
// goroutines.
func StartAccounting() (*Accounting, error) {
	s, err := TakeSnapshot(os.Getpid())
	if err != nil {
		return nil, err
	}
	return &Accounting{fds: s, goroutines: goleak.IgnoreCurrent()}, nil
}

// Check waits up to timeout for the descriptors opened and the goroutines
// started since StartAccounting to end (the calling goroutine excepted;
// ignore lists more goroutines to disregard). The error wraps ErrLeak and
// says what is left.
func (a *Accounting) Check(timeout time.Duration, ignore ...goleak.Option) error {
	fdErr := WaitNoneOpened(a.fds, timeout)
	opts := append([]goleak.Option{a.goroutines}, ignore...)
	var gErr error
	deadline := time.Now().Add(timeout)
	for { // goleak.Find retries for a while itself
		gErr = goleak.Find(opts...)
		if gErr == nil || time.Now().After(deadline) {
			break
		}
	}
	if gErr != nil {
		gErr = fmt.Errorf("%w: goroutines: %w", ErrLeak, gErr)
	}
	return errors.Join(fdErr, gErr)
}
