package fdpass

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// ErrWoken is Accept's answer once its Waker has been woken.
var ErrWoken = errors.New("accept: woken")

// Waker interrupts Accept calls: once woken, it stays readable, and every
// Accept waiting with it returns ErrWoken.
type Waker struct{ r, w int }

// NewWaker makes a Waker: a pipe, closed by Close.
func NewWaker() (*Waker, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	return &Waker{r: p[0], w: p[1]}, nil
}

// Wake wakes every Accept waiting with w, now and later.
func (w *Waker) Wake() { unix.Write(w.w, []byte{0}) }

// Close closes the pipe; no Accept may be waiting with w.
func (w *Waker) Close() {
	unix.Close(w.r)
	unix.Close(w.w)
}

// Accept waits, blocking the calling thread, for a connection on the
// listening socket ln, which must be in non-blocking mode (as package net
// leaves every listener), and returns it in blocking mode, close-on-exec,
// with the peer's address. It returns ErrWoken once w has been woken. ln's
// mode is left as it is: the wait is poll's, not accept's.
func Accept(ln int, w *Waker) (int, string, error) {
	wait := []unix.PollFd{{Fd: int32(ln), Events: unix.POLLIN}, {Fd: int32(w.r), Events: unix.POLLIN}}
	for {
		if _, err := unix.Ppoll(wait, nil, nil); err != nil && err != unix.EINTR {
			return -1, "", os.NewSyscallError("ppoll", err)
		}
		if wait[1].Revents != 0 {
			return -1, "", ErrWoken
		}
		fd, sa, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		switch err {
		case nil:
			name := ""
			if u, ok := sa.(*unix.SockaddrUnix); ok {
				name = u.Name
			}
			return fd, name, nil
		case unix.EAGAIN, unix.EINTR, unix.ECONNABORTED:
			continue // another thread took it, or it died in the queue
		}
		return -1, "", os.NewSyscallError("accept4", err)
	}
}
