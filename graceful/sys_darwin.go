package graceful

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// hasOverflowIDs: there are no user namespaces here.
const hasOverflowIDs = false

// maxPathLen is the size of sun_path, with its terminating zero.
const maxPathLen = 104

// isAbstract: there are no abstract sockets here; "@name" is a path.
func isAbstract(string) bool { return false }

func openDir(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// bindPath is the path to name in the directory at path parent: it must
// fit sun_path here.
func bindPath(_ int, parent, name string) string { return filepath.Join(parent, name) }

// reach is the path to connect to name in the directory at path parent:
// it must fit sun_path here.
func reach(_ int, parent, name string) (string, func(), error) {
	return filepath.Join(parent, name), func() {}, nil
}

func renameNoReplace(fromDir int, from string, toDir int, to string) error {
	err := unix.RenameatxNp(fromDir, from, toDir, to, unix.RENAME_EXCL)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
		if err = unix.Linkat(fromDir, from, toDir, to, 0); err == nil {
			unix.Unlinkat(fromDir, from, 0)
		}
	}
	if err != nil {
		return os.NewSyscallError("renameatx_np", err)
	}
	return nil
}

func renameExchange(fromDir int, from string, toDir int, to string) error {
	err := unix.RenameatxNp(fromDir, from, toDir, to, unix.RENAME_SWAP)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
		err = unix.Renameat(fromDir, from, toDir, to)
	}
	if err != nil {
		return os.NewSyscallError("renameatx_np", err)
	}
	return nil
}
