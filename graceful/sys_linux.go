package graceful

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// hasOverflowIDs: Linux shows an unmapped user or group as an overflow id.
const hasOverflowIDs = true

// maxPathLen is the size of sun_path, with its terminating zero.
const maxPathLen = 108

// isAbstract reports whether addr names an abstract socket ("@name").
func isAbstract(addr string) bool { return strings.HasPrefix(addr, "@") }

func openDir(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// bindPath is a path to name in the directory dir (at path parent) short
// enough for sun_path: the path itself, or one through /proc/self/fd.
func bindPath(dir int, parent, name string) string {
	if p := filepath.Join(parent, name); len(p) < maxPathLen {
		return p
	}
	return "/proc/self/fd/" + strconv.Itoa(dir) + "/" + name
}

// reach is a path by which to connect to the socket name in the directory
// dir (at path parent), however long its own path is: through
// /proc/self/fd and a descriptor of the socket file itself, which release
// closes.
func reach(dir int, parent, name string) (path string, release func(), err error) {
	if p := filepath.Join(parent, name); len(p) < maxPathLen {
		return p, func() {}, nil
	}
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, &os.PathError{Op: "open", Path: filepath.Join(parent, name), Err: err}
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), func() { unix.Close(fd) }, nil
}

func renameNoReplace(fromDir int, from string, toDir int, to string) error {
	err := unix.Renameat2(fromDir, from, toDir, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: a hard link fails on an
		// existing name just as well.
		if err = unix.Linkat(fromDir, from, toDir, to, 0); err == nil {
			unix.Unlinkat(fromDir, from, 0)
		}
	}
	if err != nil {
		return os.NewSyscallError("renameat2", err)
	}
	return nil
}

func renameExchange(fromDir int, from string, toDir int, to string) error {
	err := unix.Renameat2(fromDir, from, toDir, to, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_EXCHANGE here: replace what was checked, with the
		// window between the check and the rename that it would close.
		err = unix.Renameat(fromDir, from, toDir, to)
	}
	return os.NewSyscallError("renameat2", err) // nil on success
}
