//go:build linux

package graceful_test

import "golang.org/x/sys/unix"

func setPassCred(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
}
