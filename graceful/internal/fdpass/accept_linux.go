package fdpass

import (
	"errors"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrWouldBlock means nothing was ready within the brief wait asked for.
var ErrWouldBlock = errors.New("not ready within the brief wait")

// Accept takes a connection from the listening socket ln, which must be in
// non-blocking mode (as package net leaves every listener), waiting for one
// up to wait on the calling thread (poll, which the kernel wakes directly),
// and returns ErrWouldBlock if none came. The connection is non-blocking
// and close-on-exec, ready for a Blocking; peer is its address, if it has
// one. ln's mode is left as it is.
func Accept(ln int, wait time.Duration) (fd int, peer string, err error) {
	for {
		if wait <= 0 {
			return -1, "", ErrWouldBlock
		}
		ready, err := waitFd(ln, unix.POLLIN, wait)
		if err != nil {
			return -1, "", err
		}
		if !ready {
			return -1, "", ErrWouldBlock
		}
		fd, sa, err := unix.Accept4(ln, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		switch err {
		case nil:
			if u, ok := sa.(*unix.SockaddrUnix); ok {
				peer = u.Name
			}
			return fd, peer, nil
		case unix.EAGAIN, unix.EINTR, unix.ECONNABORTED:
			continue // another thread took it, or it died in the queue
		}
		return -1, "", os.NewSyscallError("accept4", err)
	}
}

// Detach takes the socket out of c for a Blocking: a close-on-exec
// duplicate (non-blocking, as package net left it) with c's peer address;
// c is closed, which takes the socket out of Go's poller. c must be the
// caller's alone.
func Detach(c *net.UnixConn) (fd int, peer string, err error) {
	defer c.Close()
	if a, ok := c.RemoteAddr().(*net.UnixAddr); ok && a != nil {
		peer = a.Name
	}
	orig, err := RawFd(c)
	if err != nil {
		return -1, "", err
	}
	if fd, err = Dup(orig); err != nil {
		return -1, "", err
	}
	return fd, peer, nil
}
