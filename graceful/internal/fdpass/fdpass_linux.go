package fdpass

import (
	"os"
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

func peerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, os.NewSyscallError("getsockopt", err)
	}
	return int(cred.Uid), nil
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

// waitFd blocks the thread until fd has one of events, an error or a
// hang-up, or timeout passes, and reports which.
func waitFd(fd int, events int16, timeout time.Duration) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	deadline := time.Now().Add(timeout)
	for {
		ts := unix.NsecToTimespec(max(timeout, 0).Nanoseconds())
		n, err := unix.Ppoll(pfd, &ts, nil)
		switch err {
		case nil:
			return n > 0, nil
		case unix.EINTR:
			timeout = time.Until(deadline)
			continue
		}
		return false, os.NewSyscallError("ppoll", err)
	}
}
