package fdpass

import (
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// extraOOB is room for SCM_CREDENTIALS, which comes before SCM_RIGHTS, and
// SCM_PIDFD, which comes after.
var extraOOB = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4)

// closeCarried closes the descriptor of a control message other than
// SCM_RIGHTS (TRN-6): SCM_PIDFD, sent when the socket has SO_PASSPIDFD.
func closeCarried(h *unix.Cmsghdr, data []byte) {
	if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_PIDFD && len(data) >= 4 {
		unix.Close(int(*(*int32)(unsafe.Pointer(&data[0]))))
	}
}

func peerCred(fd int) (Cred, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{PID: -1, UID: -1, GID: -1}, os.NewSyscallError("getsockopt", err)
	}
	return Cred{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}, nil
}

// noPassRights is set once the kernel said it has no SO_PASSRIGHTS (before
// Linux 6.16), so that no socket asks again.
var noPassRights atomic.Bool

func passRights(fd int) (on, known bool, err error) {
	if noPassRights.Load() {
		return true, false, nil
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS)
	if err == unix.ENOPROTOOPT || err == unix.EINVAL {
		noPassRights.Store(true)
		return true, false, nil
	}
	if err != nil {
		return true, false, os.NewSyscallError("getsockopt", err)
	}
	return v != 0, true, nil
}

// SetPassRightsFd is SetPassRights on a raw socket.
func SetPassRightsFd(fd int, on bool) error {
	if noPassRights.Load() {
		return nil
	}
	v := 0
	if on {
		v = 1
	}
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS, v)
	if err == unix.ENOPROTOOPT || err == unix.EINVAL {
		noPassRights.Store(true)
		return nil
	}
	return os.NewSyscallError("setsockopt", err) // nil on success
}

const (
	recvFlags = unix.MSG_CMSG_CLOEXEC
	sendFlags = unix.MSG_NOSIGNAL
)

// setCloexec has nothing to do: MSG_CMSG_CLOEXEC did it.
func setCloexec([]int) error { return nil }

// socketCloexec is a new unix stream socket, non-blocking and close-on-exec.
func socketCloexec() (int, error) {
	return unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
}

// pollOnce is one ppoll of pfd, for up to timeout. EINTR comes as it is.
func pollOnce(pfd []unix.PollFd, timeout time.Duration) error {
	ts := unix.NsecToTimespec(timeout.Nanoseconds())
	_, err := unix.Ppoll(pfd, &ts, nil)
	if err == unix.EINTR {
		return err
	}
	return os.NewSyscallError("ppoll", err) // nil on success
}
