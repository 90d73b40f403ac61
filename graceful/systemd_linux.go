package graceful

import "golang.org/x/sys/unix"

// datagramSocket is an unbound unix datagram socket, close-on-exec.
func datagramSocket() (int, error) {
	return unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
}
