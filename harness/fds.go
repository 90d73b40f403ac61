//go:build linux

package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// FileID identifies an open file (a socket, pipe, regular file...) across
// processes: the st_dev and st_ino of what a descriptor refers to. Two
// descriptors with the same FileID refer to the same kernel object.
type FileID struct {
	Dev uint64
	Ino uint64
}

func (id FileID) String() string { return fmt.Sprintf("dev %#x ino %d", id.Dev, id.Ino) }

// FD describes one open descriptor of a process as /proc shows it.
type FD struct {
	// Num is the descriptor number.
	Num int
	// Target is what /proc/<pid>/fd/<num> links to: a path, or
	// "socket:[ino]", "pipe:[ino]", "anon_inode:[eventpoll]"...
	Target string
	// ID is the identity of the open file.
	ID FileID
	// Flags are the "flags:" of /proc/<pid>/fdinfo/<num>: the open file
	// description's status flags (O_NONBLOCK, O_APPEND, the access mode)
	// plus O_CLOEXEC when this descriptor is close-on-exec.
	Flags int
	// Pos is the file offset ("pos:").
	Pos int64
}

// CloseOnExec reports whether the descriptor is close-on-exec.
func (f FD) CloseOnExec() bool { return f.Flags&unix.O_CLOEXEC != 0 }

// NonBlocking reports whether the open file description is in
// non-blocking mode (shared by every descriptor that refers to it, in
// every process).
func (f FD) NonBlocking() bool { return f.Flags&unix.O_NONBLOCK != 0 }

func (f FD) String() string {
	var modes []string
	if f.CloseOnExec() {
		modes = append(modes, "cloexec")
	}
	if f.NonBlocking() {
		modes = append(modes, "nonblock")
	}
	if f.Flags&unix.O_APPEND != 0 {
		modes = append(modes, "append")
	}
	return fmt.Sprintf("fd %d -> %s (%v, flags %#o [%s], pos %d)",
		f.Num, f.Target, f.ID, f.Flags, strings.Join(modes, " "), f.Pos)
}

// ErrNoFD: the process has no such descriptor (or no longer exists).
var ErrNoFD = errors.New("harness: no such descriptor")

// DescribeFD describes descriptor num of process pid. It needs the right to
// read /proc/<pid> (same user, or root).
func DescribeFD(pid, num int) (FD, error) {
	fd := FD{Num: num}
	link := fmt.Sprintf("/proc/%d/fd/%d", pid, num)
	var err error
	if fd.Target, err = os.Readlink(link); err != nil {
		return fd, noFD(pid, num, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(link, &st); err != nil {
		return fd, noFD(pid, num, os.NewSyscallError("stat "+link, err))
	}
	fd.ID = FileID{Dev: st.Dev, Ino: st.Ino}
	info, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, num))
	if err != nil {
		return fd, noFD(pid, num, err)
	}
	defer info.Close()
	sc := bufio.NewScanner(info)
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), ":")
		value = strings.TrimSpace(value)
		switch key {
		case "flags":
			flags, err := strconv.ParseInt(value, 8, 64)
			if err != nil {
				return fd, fmt.Errorf("harness: fdinfo of fd %d of pid %d: flags %q: %w", num, pid, value, err)
			}
			fd.Flags = int(flags)
		case "pos":
			if fd.Pos, err = strconv.ParseInt(value, 10, 64); err != nil {
				return fd, fmt.Errorf("harness: fdinfo of fd %d of pid %d: pos %q: %w", num, pid, value, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fd, noFD(pid, num, err)
	}
	return fd, nil
}

func noFD(pid, num int, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%w: fd %d of pid %d: %w", ErrNoFD, num, pid, err)
	}
	return fmt.Errorf("harness: fd %d of pid %d: %w", num, pid, err)
}

// ListFDs describes every open descriptor of process pid, in ascending
// order. A descriptor closed while the list is being made is left out.
// For this process, the directory descriptor used to read the list is
// left out too.
func ListFDs(pid int) ([]FD, error) {
	nums, err := fdNumbers(pid)
	if err != nil {
		return nil, err
	}
	fds := make([]FD, 0, len(nums))
	for _, n := range nums {
		fd, err := DescribeFD(pid, n)
		if errors.Is(err, ErrNoFD) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

// CountFDs counts the open descriptors of process pid (for this process,
// without the one used to count).
func CountFDs(pid int) (int, error) {
	nums, err := fdNumbers(pid)
	return len(nums), err
}

func fdNumbers(pid int) ([]int, error) {
	dir, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("harness: list the descriptors of pid %d: %w", pid, err)
	}
	defer dir.Close()
	self := -1
	if pid == os.Getpid() {
		if self, err = RawFD(dir); err != nil {
			return nil, err
		}
	}
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("harness: list the descriptors of pid %d: %w", pid, err)
	}
	nums := make([]int, 0, len(names))
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil || n == self {
			continue
		}
		nums = append(nums, n)
	}
	slices.Sort(nums)
	return nums, nil
}

// FileIDOf returns the identity of what descriptor fd of this process
// refers to (fstat).
func FileIDOf(fd int) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return FileID{}, os.NewSyscallError("fstat", err)
	}
	return FileID{Dev: st.Dev, Ino: st.Ino}, nil
}

// RawFD returns the descriptor number behind c (an *os.File, a net.Conn,
// a net.Listener...) without duplicating it and without changing its
// blocking mode, as (*os.File).Fd would. The number is valid only while c
// is open.
func RawFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("harness: %T: %w", c, err)
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, fmt.Errorf("harness: %T: %w", c, err)
	}
	return fd, nil
}
