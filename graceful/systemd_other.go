//go:build unix && !linux

package graceful

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// datagramSocket is an unbound unix datagram socket, close-on-exec (set
// under the fork lock, as package syscall does where SOCK_CLOEXEC is
// missing).
func datagramSocket() (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(s)
	}
	return s, err
}
