package conformance

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/harness"
)

// A descriptor handed over must be the very open file description the
// sender was given (SND-2): the same object reopened, or another
// description of it, has the same st_dev and st_ino and is not enough.
// The suite compares descriptions with kcmp(KCMP_FILE) where the kernel
// has it, and otherwise by their offset and status flags in
// /proc/<pid>/fdinfo and a probe: it moves the offset (a file) or flips a
// harmless status flag (O_APPEND, on anything else) of its original and
// looks for the change on the other descriptor, which shares them only if
// it is the same description.

// identityMethod names how descriptions are compared: "kcmp" or "fdinfo".
var identityMethod = sync.OnceValue(func() string {
	if os.Getenv("GRACEFUL_CONFORMANCE_IDENTITY") == "fdinfo" {
		return "fdinfo"
	}
	if _, err := kcmpFile(os.Getpid(), 0, os.Getpid(), 0); errors.Is(err, unix.ENOSYS) {
		return "fdinfo"
	}
	return "kcmp"
})

// kcmpFile reports whether fd1 of pid1 and fd2 of pid2 are one open file
// description.
func kcmpFile(pid1, fd1, pid2, fd2 int) (bool, error) {
	const kcmpFile = 0
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return false, os.NewSyscallError("kcmp", e)
	}
	return r == 0, nil
}

// probeMu serialises the probes of the fallback: each changes an original
// for a moment.
var probeMu sync.Mutex

// sameDescription reports whether the descriptor theirs of process pid is
// the suite's own descriptor mine: the same open file description.
func sameDescription(mine, pid, theirs int) (bool, error) {
	if identityMethod() == "kcmp" {
		return kcmpFile(os.Getpid(), mine, pid, theirs)
	}
	probeMu.Lock()
	defer probeMu.Unlock()
	a, err := harness.DescribeFD(os.Getpid(), mine)
	if err != nil {
		return false, err
	}
	b, err := harness.DescribeFD(pid, theirs)
	if err != nil {
		return false, err
	}
	status := func(fl int) int { return fl &^ unix.O_CLOEXEC }
	if a.ID != b.ID || a.Pos != b.Pos || status(a.Flags) != status(b.Flags) {
		return false, nil
	}
	return probe(mine, pid, theirs)
}

// probe changes the description of mine for a moment and reports whether
// theirs saw the change.
func probe(mine, pid, theirs int) (bool, error) {
	if old, err := unix.Seek(mine, 0, 1); err == nil {
		// Seekable: move the shared offset somewhere neither had.
		at := old + 7919
		if _, err := unix.Seek(mine, at, 0); err != nil {
			return false, os.NewSyscallError("lseek", err)
		}
		defer unix.Seek(mine, old, 0)
		pos, err := fdinfoField(pid, theirs, "pos:", 10)
		return err == nil && pos == at, err
	}
	fl, err := unix.FcntlInt(uintptr(mine), unix.F_GETFL, 0)
	if err != nil {
		return false, os.NewSyscallError("fcntl", err)
	}
	if _, err := unix.FcntlInt(uintptr(mine), unix.F_SETFL, fl^unix.O_APPEND); err != nil {
		return false, os.NewSyscallError("fcntl", err)
	}
	defer unix.FcntlInt(uintptr(mine), unix.F_SETFL, fl)
	got, err := fdinfoField(pid, theirs, "flags:", 8)
	return err == nil && got&unix.O_APPEND != int64(fl&unix.O_APPEND), err
}

// fdinfoField reads one numeric field of /proc/<pid>/fdinfo/<fd>.
func fdinfoField(pid, fd int, name string, base int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			return strconv.ParseInt(strings.TrimSpace(v), base, 64)
		}
	}
	return 0, fmt.Errorf("no %q in fdinfo %d of pid %d", name, fd, pid)
}

// table is what the suite counts of a process: its descriptors, except
// those a language runtime opens for itself when it first needs them
// (an epoll instance, an eventfd), which come and go with the runtime, not
// with a session.
func table(pid int) ([]harness.FD, error) {
	all, err := harness.ListFDs(pid)
	if err != nil {
		return nil, err
	}
	var out []harness.FD
	for _, fd := range all {
		switch fd.Target {
		case "anon_inode:[eventpoll]", "anon_inode:[eventfd]", "anon_inode:[timerfd]", "anon_inode:[signalfd]", "anon_inode:[io_uring]":
			continue
		}
		out = append(out, fd)
	}
	return out, nil
}

// threads counts the threads of pid.
func threads(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(ents), err
}

// describeTable lists a process's descriptors for failure messages.
func describeTable(fds []harness.FD) string {
	var b strings.Builder
	for _, fd := range fds {
		fmt.Fprintf(&b, "  fd %d -> %s\n", fd.Num, fd.Target)
	}
	return b.String()
}
