package fdpass

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// extraOOB is room for other control messages: none carry descriptors here.
var extraOOB = 0

// closeCarried closes the descriptor of a control message other than
// SCM_RIGHTS (TRN-6): no other message carries one here.
func closeCarried(*unix.Cmsghdr, []byte) {}

// peerCred is getpeereid's answer: no pid.
func peerCred(fd int) (Cred, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Cred{PID: -1, UID: -1, GID: -1}, os.NewSyscallError("getsockopt", err)
	}
	gid := -1
	if cred.Ngroups > 0 {
		gid = int(cred.Groups[0])
	}
	return Cred{PID: -1, UID: int(cred.Uid), GID: gid}, nil
}

// darwin has no SO_PASSRIGHTS: a socket always accepts descriptors, and
// the library's reads that expect none offer no room for them.
func passRights(int) (on, known bool, err error) { return true, false, nil }

// SetPassRightsFd does nothing here.
func SetPassRightsFd(int, bool) error { return nil }

// darwin has neither MSG_CMSG_CLOEXEC nor MSG_NOSIGNAL: close-on-exec is
// set right after recvmsg (a window in which a fork elsewhere in the
// process could inherit the descriptors), and SIGPIPE is off per socket.
const (
	recvFlags = 0
	sendFlags = 0
)

func setCloexec(fds []int) error {
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return os.NewSyscallError("fcntl", err)
		}
	}
	return nil
}

func socketCloexec() (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, err
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_NOSIGPIPE, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// pollOnce is one poll of pfd, for up to timeout rounded up to the
// millisecond poll counts in. EINTR comes as it is.
func pollOnce(pfd []unix.PollFd, timeout time.Duration) error {
	_, err := unix.Poll(pfd, int((timeout+time.Millisecond-1)/time.Millisecond))
	if err == unix.EINTR {
		return err
	}
	return os.NewSyscallError("poll", err) // nil on success
}
