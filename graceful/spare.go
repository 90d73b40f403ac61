package graceful

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// SpareEnv names the descriptor of a process that a supervisor started as
// a spare: a successor started in advance, which waits before it takes the
// set over until the supervisor says its turn has come (for
// graceful-supervisor, when the serving generation has died). The
// descriptor is a unix socket whose peer is the spare's parent, running
// as the same user (anything else is an error, not a wait). The exchange
// on it is one byte each way: the spare writes 'W' once it waits, the
// supervisor writes 'G' when the turn comes, and closing it instead
// dismisses the spare.
const SpareEnv = "GRACEFUL_SPARE_FD"

// ErrSpareDismissed means this process was started as a spare (SpareEnv)
// and the supervisor dismissed it, or went away, before its turn came:
// it should exit.
var ErrSpareDismissed = errors.New("spare dismissed before its turn came")

var (
	turnOnce sync.Once
	turnErr  error
	// spareParent is the process that may hold a spare back.
	spareParent = os.Getppid
)

// AwaitTurn, in a process a supervisor started as a spare (SpareEnv),
// tells the supervisor that it waits, and blocks without a deadline until
// the supervisor says its turn has come (nil) or dismisses it
// (ErrSpareDismissed: the process should exit); elsewhere it returns nil
// at once. Only the first call waits, and every later one returns what
// it returned: the variable is unset and the descriptor closed, so that
// no child inherits them. Receive and Dial call it; a program that takes
// its predecessor's descriptors over in another way calls it first.
func AwaitTurn() error {
	turnOnce.Do(func() { turnErr = waitForTurn() })
	return turnErr
}

func waitForTurn() error {
	v, ok := os.LookupEnv(SpareEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(SpareEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return fmt.Errorf("%s=%q: not a descriptor", SpareEnv, v)
	}
	if _, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return fmt.Errorf("%s=%d: not a socket: %w", SpareEnv, fd, err)
	}
	// Only the process that started this one may hold it back: a variable
	// left in an environment by mistake, naming some other socket, must
	// not make Receive wait for ever.
	cred, err := fdpass.NewBlocking(fd).PeerCred()
	if err != nil {
		return fmt.Errorf("%s=%d: %w", SpareEnv, fd, err)
	}
	if parent := spareParent(); cred.UID != os.Geteuid() || (cred.PID > 0 && cred.PID != parent) {
		return fmt.Errorf("%s=%d: its peer (pid %d, uid %d) is not this process's parent (pid %d) as this user", SpareEnv, fd, cred.PID, cred.UID, parent)
	}
	defer unix.Close(fd)
	unix.CloseOnExec(fd)
	// One thread waits in read, once in the process's life: the kernel
	// wakes it at once, with no trip through Go's poller. The supervisor
	// may have said 'G' and closed its end before this process got here
	// (a crash soon after the spare started): it is read all the same.
	got, ok, err := fdpass.TradeByte(fd, 'W')
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrSpareDismissed, err)
	case !ok || got != 'G':
		return ErrSpareDismissed
	}
	return nil
}
