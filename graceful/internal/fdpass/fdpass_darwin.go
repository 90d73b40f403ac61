package fdpass

import (
	"os"

	"golang.org/x/sys/unix"
)

func peerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, os.NewSyscallError("getsockopt", err)
	}
	return int(cred.Uid), nil
}
