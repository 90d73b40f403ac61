package graceful

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// errLive says that a server answers at the address: ListenAndServe waits
// for it to close.
var errLive = errors.New("a server answers there")

// Listen creates the unix socket that ListenAndServe serves on, for a
// program that must know when it is reachable, or serve it with Serve.
//
// An address that starts with "@" is an abstract address (Linux): it has
// no file, hence no permissions, and any user can bind or connect to it;
// only the credential checks (Server.Authorize, Client.Authorize) protect
// it. Listen fails with ErrAddrInUse while the name is bound.
//
// Any other address is a path. The socket is bound in a fresh 0700
// directory beside it (through /proc/self/fd on Linux when the path there
// would be too long, so that any path the kernel takes works), made 0600,
// and only then placed at the path, so that it is never reachable with
// wider permissions (AUTH-3). It replaces only a stale socket, one that
// refuses connections (a previous generation's, left behind): anything
// else at the path (a file, a FIFO, a directory, a symbolic link, a socket
// a server answers on) is left alone, and Listen fails with ErrAddrInUse
// saying what is there. The check and the placement are atomic where the
// system offers it (renameat2 on Linux, renameatx_np on macOS). Listen's
// check of a live socket connects to it and closes at once; a Server
// there does not count that as a session.
//
// On a unix listener it creates, descriptor passing is off
// (SO_PASSRIGHTS, Linux 6.16 and later): no peer can push descriptors into
// this process through it. Closing the listener leaves the file: a
// successor may have placed its own socket at the path. A file left
// behind refuses connections, so Receive reports ErrNoServer, and the next
// Listen replaces it.
func Listen(addr string) (net.Listener, error) {
	ln, err := listen(addr)
	if err != nil {
		return nil, opError("listen", addr, err)
	}
	return ln, nil
}

func listen(addr string) (*net.UnixListener, error) {
	if isAbstract(addr) {
		ln, err := listenUnix(addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: the abstract name is bound: %w", ErrAddrInUse, errLive)
		}
		return ln, err
	}
	parent, base := filepath.Dir(addr), filepath.Base(addr)
	tmp, err := os.MkdirTemp(parent, ".gf")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir, err := openDir(tmp)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	into, err := openDir(parent)
	if err != nil {
		return nil, err
	}
	defer unix.Close(into)

	ln, err := listenUnix(bindPath(dir, tmp, "s"))
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := unix.Fchmodat(dir, "s", 0o600, 0); err != nil {
		ln.Close()
		return nil, os.NewSyscallError("fchmodat", err)
	}
	if err := place(dir, tmp, "s", into, parent, base); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// listenUnix listens on a unix stream socket at addr that refuses
// descriptors from the first moment (SO_PASSRIGHTS off before bind).
func listenUnix(addr string) (*net.UnixListener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = fdpass.SetPassRightsFd(int(fd), false) }); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "unix", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.UnixListener), nil
}

// place moves the socket name in the directory dir (at path tmp) to base
// in the directory into (at path parent), replacing only a stale socket.
func place(dir int, tmp, name string, into int, parent, base string) error {
	for range 3 { // a rival that removes what is there makes us look again
		err := renameNoReplace(dir, name, into, base)
		if !errors.Is(err, syscall.EEXIST) {
			return err
		}
		err = checkStale(into, parent, base)
		if errors.Is(err, syscall.ENOENT) {
			continue
		}
		if err != nil {
			return err
		}
		err = renameExchange(dir, name, into, base)
		if errors.Is(err, syscall.ENOENT) {
			continue
		}
		if err != nil {
			return err
		}
		// What we displaced is now in our directory, which goes away with
		// it. Had a rival put something else at the path between the check
		// and the exchange, it goes back.
		if err := checkStale(dir, tmp, name); err != nil && !errors.Is(err, syscall.ENOENT) {
			renameExchange(dir, name, into, base)
			return err
		}
		return nil
	}
	return fmt.Errorf("%w: what is there keeps changing", ErrAddrInUse)
}

// checkStale returns nil when name in the directory dir (at path parent)
// is a socket that refuses connections, and otherwise says what is there.
func checkStale(dir int, parent, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return os.NewSyscallError("fstatat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%w: %s is there", ErrAddrInUse, fileType(uint32(st.Mode)))
	}
	path, release, err := reach(dir, parent, name)
	if err != nil {
		return err
	}
	defer release()
	switch err := fdpass.Probe(path); err {
	case unix.ECONNREFUSED:
		return nil
	case nil, unix.EAGAIN: // EAGAIN: its backlog is full
		return fmt.Errorf("%w: %w", ErrAddrInUse, errLive)
	case unix.ENOENT:
		return os.NewSyscallError("connect", err)
	default:
		return fmt.Errorf("%w: a socket is there, and connecting to it failed: %w", ErrAddrInUse, os.NewSyscallError("connect", err))
	}
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	}
	return "a file"
}

// dialAddr is how a client reaches addr: the address itself, or, on
// Linux, a path through /proc/self/fd when the address is too long for
// the kernel. release closes what that took.
func dialAddr(addr string) (path string, release func(), err error) {
	if isAbstract(addr) || len(addr) < maxPathLen {
		return addr, func() {}, nil
	}
	parent, base := filepath.Dir(addr), filepath.Base(addr)
	dir, err := openDir(parent)
	if err != nil {
		return "", nil, err
	}
	defer unix.Close(dir)
	return reach(dir, parent, base)
}
