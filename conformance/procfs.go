package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/harness"
)

// holding returns the descriptors of pid that refer to one of ids.
func holding(pid int, ids map[harness.FileID]bool) ([]harness.FD, error) {
	all, err := harness.ListFDs(pid)
	if err != nil {
		return nil, err
	}
	var out []harness.FD
	for _, fd := range all {
		if ids[fd.ID] {
			out = append(out, fd)
		}
	}
	return out, nil
}

// statusFlags returns the status flags of one of the suite's descriptors.
func statusFlags(fd int) (int, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return 0, os.NewSyscallError("fcntl", err)
	}
	return fl, nil
}

// Socket options the suite turns on in a receiver's socket (TRN-6).
const (
	// soPassPidfd makes every recvmsg return an SCM_PIDFD message carrying
	// a pidfd of the sender (Linux 6.5 and later). x/sys lacks the name.
	soPassPidfd = 76
	scmPidfd    = 4
)

// errNoOption means the kernel does not know a socket option.
var errNoOption = errors.New("socket option not supported by this kernel")

// setSockOpts turns the options opts on for the socket of pid that is
// connected to the unix socket at path, through a duplicate taken with
// pidfd_getfd. With SO_PASSCRED, every recvmsg of that process on the
// socket returns an SCM_CREDENTIALS message before the SCM_RIGHTS one;
// with SO_PASSPIDFD, an SCM_PIDFD message whose descriptor it must close.
func setSockOpts(pid int, path string, opts ...int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	fds, err := harness.ListFDs(pid)
	if err != nil {
		return err
	}
	for _, fd := range fds {
		dup, err := unix.PidfdGetfd(pidfd, fd.Num, 0)
		if err != nil {
			continue
		}
		peer, err := unix.Getpeername(dup)
		if sa, ok := peer.(*unix.SockaddrUnix); err == nil && ok && sa.Name == path {
			defer unix.Close(dup)
			for _, opt := range opts {
				err := unix.SetsockoptInt(dup, unix.SOL_SOCKET, opt, 1)
				if errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL) {
					return fmt.Errorf("%w: %d", errNoOption, opt)
				}
				if err != nil {
					return os.NewSyscallError("setsockopt", err)
				}
			}
			return nil
		}
		unix.Close(dup)
	}
	return fmt.Errorf("no socket of pid %d is connected to %s", pid, path)
}

// selfPidfd returns the identity of a pidfd of this process: the object
// SCM_PIDFD hands the receiver.
func selfPidfd() (harness.FileID, error) {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return harness.FileID{}, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(fd)
	return harness.FileIDOf(fd)
}

// limitFiles lowers pid's RLIMIT_NOFILE soft limit so that only free more
// descriptors fit, and returns a function that restores it.
func limitFiles(pid, free int) (restore func() error, err error) {
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		return nil, os.NewSyscallError("prlimit", err)
	}
	fds, err := harness.ListFDs(pid)
	if err != nil {
		return nil, err
	}
	used := map[int]bool{}
	for _, fd := range fds {
		used[fd.Num] = true
	}
	// The kernel hands out the lowest free numbers: find the limit under
	// which exactly free numbers are unused.
	limit, unused := 0, 0
	for ; ; limit++ {
		if used[limit] {
			continue
		}
		if unused == free {
			break
		}
		unused++
	}
	lim := unix.Rlimit{Cur: uint64(limit), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return nil, os.NewSyscallError("prlimit", err)
	}
	return func() error {
		return os.NewSyscallError("prlimit", unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil))
	}, nil
}

// stop stops every thread of pid (SIGSTOP) and returns once they all are,
// with the function that lets them go on (SIGCONT).
func stop(pid int, wait time.Duration) (resume func(), err error) {
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		return nil, os.NewSyscallError("kill", err)
	}
	resume = func() { unix.Kill(pid, unix.SIGCONT) }
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	deadline := time.After(wait)
	for {
		if stopped(pid) {
			return resume, nil
		}
		select {
		case <-t.C:
		case <-deadline:
			resume()
			return nil, fmt.Errorf("pid %d did not stop within %v", pid, wait)
		}
	}
}

// stopped reports whether every thread of pid is stopped.
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			return false
		}
		rest := b[bytes.LastIndexByte(b, ')')+1:]
		if f := strings.Fields(string(rest)); len(f) == 0 || f[0] != "T" {
			return false
		}
	}
	return true
}
