package fdpass

import (
	"os"

	"golang.org/x/sys/unix"
)

// extraOOB is room for other control messages: none carry descriptors here.
var extraOOB = 0

// closeCarried closes the descriptor of a control message other than
// SCM_RIGHTS (TRN-6): no other message carries one here.
func closeCarried(*unix.Cmsghdr, []byte) {}

func peerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, os.NewSyscallError("getsockopt", err)
	}
	return int(cred.Uid), nil
}
