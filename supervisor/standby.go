//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// A standby is the supervisor's hand-off socket made in advance, while a
// generation serves: bound in the supervisor's private directory, placed
// at Config.Handoff by a rename once the serving generation has died.
// Binding a socket creates a file, which on some file systems takes
// longer than the rest of the recovery's work before the successor
// starts; a rename does not.

// standbyName is the standby's file in the supervisor's directory.
const standbyName = "handoff-standby.sock"

// prepareStandby starts making the standby, when the store holds
// descriptors to serve after a crash, there is a hand-off path that a
// rename can reach, and none is ready or on its way. The bind runs
// on a goroutine of its own: a slow file system must not hold up Run's.
// Failing costs nothing but time: the recovery binds the socket in place.
func (st *state) prepareStandby() {
	s := st.s
	path := s.cfg.Handoff
	if len(st.store.fds) == 0 || st.standby != nil || st.standbyBinding || st.noStandby || path == "" || strings.HasPrefix(path, "@") {
		return
	}
	st.standbyBinding = true
	at := filepath.Join(s.dir, standbyName)
	go func() {
		ln, err := bindStandby(at)
		if err != nil {
			s.log.Debug("no standby hand-off socket", "err", err)
		}
		keep := func() {
			st.standbyBinding = false
			if ln != nil && st.stopping {
				dropStandby(ln, at)
				return
			}
			st.standby = ln
		}
		select {
		case s.ops <- keep:
		case <-s.quit:
			if ln != nil {
				dropStandby(ln, at)
			}
		}
	}()
}

// bindStandby binds a socket at at, made 0600, that stays there when it
// is closed: once placed, the path is the next generation's.
func bindStandby(at string) (*net.UnixListener, error) {
	os.Remove(at) // a previous supervisor's, left behind
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: at, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(at, 0o600); err != nil {
		dropStandby(ln, at)
		return nil, err
	}
	return ln, nil
}

func dropStandby(ln *net.UnixListener, at string) {
	ln.Close()
	os.Remove(at)
}

// takeStandby places the standby at the hand-off path and returns it, or
// returns nil (and drops it) when it cannot: what is at the path is not a
// stale socket, or the path is on another file system.
func (st *state) takeStandby() *net.UnixListener {
	ln := st.standby
	if ln == nil {
		return nil
	}
	st.standby = nil
	at := filepath.Join(st.s.dir, standbyName)
	if err := placeStandby(at, st.s.cfg.Handoff); err != nil {
		st.s.log.Debug("standby hand-off socket not used", "err", err)
		st.noStandby = errors.Is(err, unix.EXDEV)
		dropStandby(ln, at)
		return nil
	}
	return ln
}

// closeStandby drops the standby, if any.
func (st *state) closeStandby() {
	if st.standby != nil {
		dropStandby(st.standby, filepath.Join(st.s.dir, standbyName))
		st.standby = nil
	}
}

// placeStandby renames at to path, replacing only a stale socket there
// (one that refuses connections: the dead generation's), as graceful.Listen
// does: the exchange and the check of what it displaced are atomic
// together, and anything else goes back.
func placeStandby(at, path string) error {
	err := unix.Renameat2(unix.AT_FDCWD, at, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	if err != unix.EEXIST {
		return os.NewSyscallError("renameat2", err) // nil on success
	}
	if err := unix.Renameat2(unix.AT_FDCWD, at, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE); err != nil {
		return os.NewSyscallError("renameat2", err)
	}
	// What was at path is now at at.
	var fi unix.Stat_t
	if err := unix.Lstat(at, &fi); err == nil && fi.Mode&unix.S_IFMT == unix.S_IFSOCK && refusesConnections(at) {
		os.Remove(at)
		return nil
	}
	unix.Renameat2(unix.AT_FDCWD, at, unix.AT_FDCWD, path, unix.RENAME_EXCHANGE)
	return fmt.Errorf("%s holds something other than a stale socket", path)
}

// refusesConnections reports whether path is a socket nobody listens on.
func refusesConnections(path string) bool {
	_, err := answeringPID(path)
	return err == unix.ECONNREFUSED
}
