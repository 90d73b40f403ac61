//go:build unix

package graceful

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// systemd support: socket activation as a first-start source next to
// Receive, and sd_notify(3) for readiness, reloads, the main PID and the
// file descriptor store. The service manager is systemd, or
// graceful-supervisor, which speaks the same protocol; a program written
// for one runs under the other.
//
// github.com/coreos/go-systemd/v22 does the parts it covers: the activation
// variables (activation.Files) and text notifications (daemon.SdNotify,
// daemon.SdNotifyMonotonicUsec). It cannot attach descriptors to a
// notification, so SdNotifyWithFds and SdStore are written here.

// Notification states for SdNotify (see sd_notify(3)).
const (
	// NotifyReady says the service serves: startup, a reload or a
	// restart is complete.
	NotifyReady = "READY=1"
	// NotifyStopping says the service is beginning to stop.
	NotifyStopping = "STOPPING=1"
)

// NotifyReloading says the service is reloading (or restarting into a new
// generation), with the time of the announcement (RELOADING=1 and
// MONOTONIC_USEC=, as systemd's Type=notify-reload requires). Send
// NotifyReady when done.
func NotifyReloading() string {
	return "RELOADING=1\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n")
}

// NotifyStatus is a free-form status line shown by the service manager
// (systemctl status, graceful-supervisor status).
func NotifyStatus(text string) string { return "STATUS=" + text }

// NotifyMainPID tells the service manager that pid is now the service's
// main process: a generation started by its predecessor, rather than by
// the manager, says so once it serves.
func NotifyMainPID(pid int) string { return "MAINPID=" + strconv.Itoa(pid) }

// ErrNotActivated means this process was not given descriptors by socket
// activation (LISTEN_FDS unset, zero, or meant for another process).
var ErrNotActivated = errors.New("graceful: no descriptors from socket activation")

// SdNotify sends states (such as NotifyReady, NotifyStatus("...")), one a
// line, in one datagram to the service manager at $NOTIFY_SOCKET. It
// reports false and no error when NOTIFY_SOCKET is not set: the program
// does not run under a service manager. NOTIFY_SOCKET stays set, so that a
// successor started by this process can notify too.
func SdNotify(states ...string) (bool, error) {
	sent, err := daemon.SdNotify(false, strings.Join(states, "\n"))
	if err != nil {
		return false, fmt.Errorf("graceful: sd_notify: %w", err)
	}
	return sent, nil
}

// SdNotifyWithFds is SdNotify with descriptors attached to the datagram
// (SCM_RIGHTS), as sd_pid_notify_with_fds(3) sends them: the manager gets
// duplicates, fds stay the caller's. Use it with "FDSTORE=1" and
// "FDNAME=..." (see SdStore).
func SdNotifyWithFds(fds []int, states ...string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if err := notifyWithFds(addr, strings.Join(states, "\n"), fds); err != nil {
		return false, fmt.Errorf("graceful: sd_notify to %s: %w", addr, err)
	}
	return true, nil
}

// SdStore stores duplicates of the descriptors of values (listeners,
// connections, *os.File: anything with a SyscallConn) in the service
// manager's file descriptor store under name (FDSTORE=1, FDNAME=name). The
// manager keeps them across the death of this process and hands them to
// the next one: socket activation (ReceiveActivation) under systemd, and
// under graceful-supervisor either that or, with its -handoff option, a
// graceful session in which each descriptor comes with Meta{"name": name}.
// name is at most 255 printable ASCII characters without ':'; values stay
// the caller's and their blocking mode is left alone.
func SdStore(name string, values ...syscall.Conn) (bool, error) {
	if err := checkFdName(name); err != nil {
		return false, fmt.Errorf("graceful: sd_notify: %w", err)
	}
	fds := make([]int, 0, len(values))
	for _, v := range values {
		fd, err := fdpass.RawFd(v)
		if err != nil {
			return false, fmt.Errorf("graceful: sd_notify: %w", err)
		}
		fds = append(fds, fd)
	}
	sent, err := SdNotifyWithFds(fds, "FDSTORE=1", "FDNAME="+name)
	// The raw numbers must stay valid until the datagram is sent.
	runtime.KeepAlive(values)
	return sent, err
}

// SdStoreRemove removes the descriptors stored under name from the service
// manager's store (FDSTOREREMOVE=1).
func SdStoreRemove(name string) (bool, error) {
	if err := checkFdName(name); err != nil {
		return false, fmt.Errorf("graceful: sd_notify: %w", err)
	}
	return SdNotify("FDSTOREREMOVE=1", "FDNAME="+name)
}

// checkFdName applies systemd's rule for descriptor names: they end up in
// LISTEN_FDNAMES, separated by ':'.
func checkFdName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("descriptor name %q: must be 1 to 255 characters", name)
	}
	for _, c := range []byte(name) {
		if c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("descriptor name %q: only printable ASCII without ':'", name)
		}
	}
	return nil
}

// notifyWithFds sends one datagram to addr ("@name" is an abstract
// address) with fds attached. (Package net refuses WriteMsgUnix on a
// connected datagram socket, and an unconnected one needs an address of
// its own: a raw socket does it in three system calls.)
func notifyWithFds(addr, state string, fds []int) error {
	s, err := datagramSocket()
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	oob := fdpass.AppendRights(nil, fds) // nil for none
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		return os.NewSyscallError("sendmsg", err)
	}
	return nil
}

// ReceiveActivation hands the descriptors this process got by socket
// activation (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, set by systemd,
// systemd-socket-activate or graceful-supervisor) to cb, one at a time in
// their order, each with Meta{"name": its name} as metadata: the callback
// written for Receive takes them as they are, so activation is one more
// source for a first start:
//
//	err := graceful.Receive(sock, take)
//	if errors.Is(err, graceful.ErrNoServer) {
//		err = graceful.ReceiveActivation(take)
//	}
//	if errors.Is(err, graceful.ErrNotActivated) {
//		ln, err = net.Listen("tcp", addr)
//	}
//
// It unsets the three variables whatever the outcome, so that children do
// not inherit them, and the descriptors it hands out are close-on-exec. An
// unnamed descriptor gets systemd's default name, "unknown". It returns an
// error matching ErrNotActivated when there are none for this process. Like
// Receive's, cb owns each fd from the call on; when cb returns an error, the
// descriptors not yet handed are closed and the error is returned wrapped in
// ErrRejected.
func ReceiveActivation(cb ReceiveCallback) error {
	names := os.Getenv("LISTEN_FDNAMES")
	files := activation.Files(true) // close-on-exec, variables unset
	if len(files) == 0 {
		return ErrNotActivated
	}
	// activation.Files names an unnamed descriptor LISTEN_FD_<n>; systemd
	// calls it "unknown".
	given := strings.Split(names, ":")
	fds := make([]int, len(files))
	var err error
	for i, f := range files {
		fds[i] = -1
		if err == nil {
			fds[i], err = dupCloexec(f)
		}
		f.Close()
	}
	if err != nil {
		closeFds(fds)
		return fmt.Errorf("graceful: socket activation: %w", err)
	}
	for i, fd := range fds {
		name := "unknown"
		if i < len(given) && given[i] != "" {
			name = given[i]
		}
		if err := cb(fd, bytes.NewReader(wire.AppendMeta(nil, Meta{"name": name}))); err != nil {
			closeFds(fds[i+1:])
			return fmt.Errorf("graceful: socket activation: %w: descriptor %d (%s): %w", ErrRejected, i, name, err)
		}
	}
	return nil
}

// dupCloexec duplicates f's descriptor with close-on-exec, without Fd
// (which could change its blocking mode).
func dupCloexec(f *os.File) (int, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup := -1
	var derr error
	if err := sc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return dup, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
