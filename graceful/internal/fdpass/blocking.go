package fdpass

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Blocking is a unix stream socket in non-blocking mode whose calls wait on
// the calling thread, in poll, rather than in Go's poller: the kernel wakes
// the thread directly when the peer writes, with no trip through the
// runtime's network poller, and a deadline costs no system call (it is
// poll's timeout). For short exchanges that is most of the cost. Use it only
// on a socket whose open file description nobody else reads or writes.
type Blocking struct {
	fd int
	// answerDue is set by a write and cleared by a read: a read right after
	// a write waits for the peer's answer before trying, since it cannot
	// be there yet.
	answerDue bool
}

// NewBlocking takes fd, which must be in non-blocking mode.
func NewBlocking(fd int) *Blocking { return &Blocking{fd: fd} }

// Fd is the socket.
func (b *Blocking) Fd() int { return b.fd }

// Read is Read for a Blocking socket, which gives up at deadline.
func (b *Blocking) Read(p, oob []byte, fds []int, deadline time.Time) (int, []int, error) {
	var (
		n, oobn, flags int
		err            error
	)
	if b.answerDue {
		b.answerDue = false
		if err := b.wait(unix.POLLIN, deadline); err != nil {
			return 0, fds, blockingError("recvmsg", err)
		}
	}
	err = b.retry(unix.POLLIN, deadline, func() error {
		n, oobn, flags, _, err = unix.Recvmsg(b.fd, p, oob, recvFlags)
		return err
	})
	if err != nil {
		return 0, fds, blockingError("recvmsg", err)
	}
	before := len(fds)
	fds, perr := appendFds(fds, oob[:oobn])
	if perr == nil && flags&unix.MSG_CTRUNC != 0 {
		perr = ErrTruncated
	}
	if perr == nil {
		perr = setCloexec(fds[before:])
	}
	if perr != nil {
		CloseAll(fds[before:])
		return n, fds[:before], perr
	}
	if n == 0 && len(p) > 0 {
		return 0, fds, io.EOF
	}
	return n, fds, nil
}

// Write is Write for a Blocking socket, which gives up at deadline.
func (b *Blocking) Write(data, oob []byte, deadline time.Time) error {
	for len(data) > 0 {
		var n int
		err := b.retry(unix.POLLOUT, deadline, func() (err error) {
			n, err = unix.SendmsgN(b.fd, data, oob, nil, sendFlags)
			return err
		})
		if err != nil {
			return blockingError("sendmsg", err)
		}
		data, oob = data[n:], nil
	}
	b.answerDue = true
	return nil
}

// retry makes call until it does not fail with EAGAIN or EINTR, waiting
// for events between tries, and gives up at deadline.
func (b *Blocking) retry(events int16, deadline time.Time, call func() error) error {
	for {
		err := call()
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if err := b.wait(events, deadline); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// wait blocks the thread until the socket has one of events (or an error or
// hang-up, which the next call reports) or deadline passes: then the next
// call fails with EAGAIN, and the next wait gives up.
func (b *Blocking) wait(events int16, deadline time.Time) error {
	left := time.Until(deadline)
	if left <= 0 {
		return os.ErrDeadlineExceeded
	}
	return waitFd(b.fd, events, left)
}

// waitFd blocks the thread until fd has one of events, an error or a
// hang-up, or timeout passes.
func waitFd(fd int, events int16, timeout time.Duration) error {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	deadline := time.Now().Add(timeout)
	for {
		err := pollOnce(pfd, max(timeout, 0))
		if err != unix.EINTR {
			return err
		}
		timeout = time.Until(deadline)
	}
}

// TradeByte sends say on fd, a connected socket, and then waits on the
// thread, without a deadline, for one byte back; ok is false when the peer
// closed it instead. A failed send is not an error: the peer may have
// written its answer and closed before, and what it wrote is read all the
// same.
func TradeByte(fd int, say byte) (got byte, ok bool, err error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		return 0, false, os.NewSyscallError("fcntl", err)
	}
	retryEINTR(func() error { return unix.Sendto(fd, []byte{say}, sendFlags, nil) })
	var b [1]byte
	var n int
	if err := retryEINTR(func() (err error) { n, err = unix.Read(fd, b[:]); return err }); err != nil {
		return 0, false, os.NewSyscallError("read", err)
	}
	return b[0], n == 1, nil
}

func retryEINTR(call func() error) error {
	for {
		if err := call(); err != unix.EINTR {
			return err
		}
	}
}

// PeerCred is PeerCred for a Blocking socket.
func (b *Blocking) PeerCred() (Cred, error) { return peerCred(b.fd) }

// Shutdown wakes a read or write blocked on the socket, from another
// goroutine.
func (b *Blocking) Shutdown() { unix.Shutdown(b.fd, unix.SHUT_RDWR) }

// Close closes the socket.
func (b *Blocking) Close() error { return unix.Close(b.fd) }

// DialBlocking connects a new unix stream socket to addr, giving up at
// deadline.
func DialBlocking(addr string, deadline time.Time) (*Blocking, error) {
	fd, err := socketCloexec()
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := connectBy(fd, &unix.SockaddrUnix{Name: addr}, deadline); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return NewBlocking(fd), nil
}

// Probe connects a new socket to the unix socket at path, without waiting,
// and closes it: the kernel's answer (nil, ECONNREFUSED when nobody
// listens, EAGAIN when its backlog is full) says whether a server is
// there.
func Probe(path string) error {
	fd, err := socketCloexec()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return retryEINTR(func() error { return unix.Connect(fd, &unix.SockaddrUnix{Name: path}) })
}

// connectBy connects the non-blocking socket fd to sa. A unix socket
// connects at once or, when the listener's backlog is full, fails with
// EAGAIN rather than wait: for that rare case the socket waits in a
// blocking connect with the kernel's send timeout, and is made
// non-blocking again.
func connectBy(fd int, sa unix.Sockaddr, deadline time.Time) error {
	err := retryEINTR(func() error { return unix.Connect(fd, sa) })
	if err != unix.EAGAIN {
		return blockingError("connect", err)
	}
	left := time.Until(deadline)
	if left <= 0 {
		return fmt.Errorf("connect: %w", os.ErrDeadlineExceeded)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	// The kernel counts SO_SNDTIMEO in ticks, and may give up up to a tick
	// before deadline: until deadline, it is asked again.
	for {
		tv := unix.NsecToTimeval(max(left, time.Microsecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
		err = retryEINTR(func() error { return unix.Connect(fd, sa) })
		if left = time.Until(deadline); err != unix.EAGAIN || left <= 0 {
			break
		}
	}
	if err != nil {
		return blockingError("connect", err)
	}
	return os.NewSyscallError("fcntl", unix.SetNonblock(fd, true)) // nil on success
}

// blockingError names the call that failed or ran out of time, and turns
// the kernel's timeout (EAGAIN from a blocking connect) into
// os.ErrDeadlineExceeded. Errors of other calls (ppoll, setsockopt) pass
// as they are.
func blockingError(call string, err error) error {
	errno, ok := err.(unix.Errno)
	switch {
	case err == os.ErrDeadlineExceeded:
		return fmt.Errorf("%s: %w", call, err)
	case !ok:
		return err
	case errno == unix.EAGAIN || errno == unix.EWOULDBLOCK:
		return fmt.Errorf("%s: %w", call, os.ErrDeadlineExceeded)
	}
	return os.NewSyscallError(call, err)
}

// Shutdown shuts c down in both directions, which wakes whoever is blocked
// reading or writing it, in this process or another.
func Shutdown(c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_RDWR) }); err != nil {
		return err
	}
	return serr
}
