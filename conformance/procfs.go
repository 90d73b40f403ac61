package conformance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ident is a descriptor's identity: the st_dev and st_ino of the object
// behind it. Two descriptors with the same ident name the same socket,
// pipe or file.
type ident struct{ Dev, Ino uint64 }

func (i ident) String() string { return fmt.Sprintf("dev %d ino %d", i.Dev, i.Ino) }

// identOf returns the identity of one of the suite's own descriptors.
func identOf(fd int) (ident, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ident{}, os.NewSyscallError("fstat", err)
	}
	return ident{uint64(st.Dev), st.Ino}, nil
}

// procFd describes one descriptor of another process, as /proc shows it.
type procFd struct {
	Fd      int
	Ident   ident
	CloExec bool
	Flags   int // the open file description's status flags (fdinfo "flags")
}

// procFds lists the descriptors of pid, following each /proc/<pid>/fd/N
// link with stat (the object itself, whatever the process says about it).
// Descriptors that close while it reads are left out.
func procFds(pid int) (map[int]procFd, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]procFd{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := procFdInfo(pid, n)
		if err != nil {
			continue
		}
		out[n] = p
	}
	return out, nil
}

// procFdInfo describes descriptor fd of process pid.
func procFdInfo(pid, fd int) (procFd, error) {
	base := "/proc/" + strconv.Itoa(pid)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(base, "fd", strconv.Itoa(fd)), &st); err != nil {
		return procFd{}, err
	}
	info, err := os.ReadFile(filepath.Join(base, "fdinfo", strconv.Itoa(fd)))
	if err != nil {
		return procFd{}, err
	}
	p := procFd{Fd: fd, Ident: ident{uint64(st.Dev), st.Ino}}
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				return procFd{}, fmt.Errorf("fdinfo flags %q: %w", v, err)
			}
			p.Flags = int(flags)
			p.CloExec = flags&unix.O_CLOEXEC != 0
		}
	}
	return p, nil
}

// holding returns the descriptors of pid whose identity is one of ids.
func holding(pid int, ids map[ident]bool) ([]procFd, error) {
	all, err := procFds(pid)
	if err != nil {
		return nil, err
	}
	var out []procFd
	for _, p := range all {
		if ids[p.Ident] {
			out = append(out, p)
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
	fds, err := procFds(pid)
	if err != nil {
		return err
	}
	for n := range fds {
		dup, err := unix.PidfdGetfd(pidfd, n, 0)
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
func selfPidfd() (ident, error) {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return ident{}, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(fd)
	return identOf(fd)
}

// limitFiles lowers pid's RLIMIT_NOFILE soft limit so that only free more
// descriptors fit, and returns a function that restores it.
func limitFiles(pid, free int) (restore func() error, err error) {
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		return nil, os.NewSyscallError("prlimit", err)
	}
	fds, err := procFds(pid)
	if err != nil {
		return nil, err
	}
	// The kernel hands out the lowest free numbers: find the limit under
	// which exactly free numbers are unused.
	limit, unused := 0, 0
	for ; ; limit++ {
		if _, used := fds[limit]; used {
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
