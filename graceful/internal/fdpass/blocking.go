package fdpass

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Blocking is a unix stream socket used with blocking system calls, its
// deadlines kept by the kernel (SO_RCVTIMEO, SO_SNDTIMEO). A waiting
// recvmsg is woken by the kernel directly, without a trip through Go's
// poller: for short exchanges that is most of the cost. Use it only on a
// socket whose open file description nobody else shares.
type Blocking struct {
	fd               int
	rcvTime, sndTime time.Duration // what the kernel holds, to skip setsockopt
}

// NewBlocking takes fd, which must be in blocking mode.
func NewBlocking(fd int) *Blocking { return &Blocking{fd: fd} }

// Fd is the socket.
func (b *Blocking) Fd() int { return b.fd }

// slack is how far a kernel timeout may differ from the deadline before it
// is set again: each step's fresh deadline is a little later than the last,
// and resetting the timeout for that would cost a system call a step.
const slack = 5 * time.Millisecond

func (b *Blocking) setTimeout(opt int, held *time.Duration, deadline time.Time) error {
	left := time.Until(deadline)
	if left <= 0 {
		return fmt.Errorf("%w", os.ErrDeadlineExceeded)
	}
	if off := *held - left; *held != 0 && off >= -slack && off <= slack {
		return nil
	}
	tv := unix.NsecToTimeval(left.Nanoseconds())
	if tv.Sec == 0 && tv.Usec == 0 {
		tv.Usec = 1 // zero would mean no timeout at all
	}
	if err := unix.SetsockoptTimeval(b.fd, unix.SOL_SOCKET, opt, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	*held = left
	return nil
}

// Read is Read for a blocking socket, which gives up at deadline.
func (b *Blocking) Read(p, oob []byte, fds []int, deadline time.Time) (int, []int, error) {
	if err := b.setTimeout(unix.SO_RCVTIMEO, &b.rcvTime, deadline); err != nil {
		return 0, fds, err
	}
	var (
		n, oobn, flags int
		err            error
	)
	for {
		n, oobn, flags, _, err = unix.Recvmsg(b.fd, p, oob, recvFlags)
		if err != unix.EINTR {
			break
		}
	}
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

// Write is Write for a blocking socket, which gives up at deadline.
func (b *Blocking) Write(data, oob []byte, deadline time.Time) error {
	if err := b.setTimeout(unix.SO_SNDTIMEO, &b.sndTime, deadline); err != nil {
		return err
	}
	for len(data) > 0 {
		n, err := unix.SendmsgN(b.fd, data, oob, nil, sendFlags)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return blockingError("sendmsg", err)
		}
		data, oob = data[n:], nil
	}
	return nil
}

// PeerUID is PeerUID for a blocking socket.
func (b *Blocking) PeerUID() (int, error) { return peerUID(b.fd) }

// Shutdown wakes a read or write blocked on the socket, from another
// goroutine.
func (b *Blocking) Shutdown() { unix.Shutdown(b.fd, unix.SHUT_RDWR) }

// Close closes the socket.
func (b *Blocking) Close() error { return unix.Close(b.fd) }

// DialBlocking connects a new blocking unix stream socket to addr, giving up
// at deadline.
func DialBlocking(addr string, deadline time.Time) (*Blocking, error) {
	fd, err := socketCloexec()
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	b := NewBlocking(fd)
	if err := b.setTimeout(unix.SO_SNDTIMEO, &b.sndTime, deadline); err != nil {
		b.Close()
		return nil, err
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: addr})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		b.Close()
		return nil, blockingError("connect", err)
	}
	return b, nil
}

// blockingError names the call, and turns the kernel's timeout (EAGAIN on a
// blocking socket) into os.ErrDeadlineExceeded.
func blockingError(call string, err error) error {
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%s: %w", call, os.ErrDeadlineExceeded)
	}
	return os.NewSyscallError(call, err)
}

// BlockingOf turns the socket behind c to blocking mode and returns it as
// a Blocking. c keeps owning the descriptor: close c, not the Blocking,
// and do not use c's own I/O methods meanwhile.
func BlockingOf(c syscall.Conn) (*Blocking, error) {
	fd, err := RawFd(c)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	return NewBlocking(fd), nil
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
