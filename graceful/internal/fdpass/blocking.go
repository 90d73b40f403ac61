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

	// Impatient, when set, is called once, the first time a read or write
	// has waited Patience without completing; the call then goes on until
	// its deadline. A server uses it to start answering other clients only
	// when a session turns out to be slow.
	Impatient func()
	Patience  time.Duration
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
	var (
		n, oobn, flags int
		err            error
	)
	err = b.patiently(unix.SO_RCVTIMEO, &b.rcvTime, deadline, func() error {
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

// Write is Write for a blocking socket, which gives up at deadline.
func (b *Blocking) Write(data, oob []byte, deadline time.Time) error {
	for len(data) > 0 {
		var n int
		err := b.patiently(unix.SO_SNDTIMEO, &b.sndTime, deadline, func() (err error) {
			n, err = unix.SendmsgN(b.fd, data, oob, nil, sendFlags)
			return err
		})
		if err != nil {
			return blockingError("sendmsg", err)
		}
		data, oob = data[n:], nil
	}
	return nil
}

// patiently makes one blocking call within deadline, retried on EINTR.
// While Impatient is set and the deadline is further than Patience, the
// call first waits only Patience; if that passes, Impatient is called and
// the call waits out the rest. The error is the call's, or a deadline
// error from setsockopt.
func (b *Blocking) patiently(opt int, held *time.Duration, deadline time.Time, call func() error) error {
	if b.Impatient != nil && time.Until(deadline) > b.Patience+slack {
		if err := b.setTimeout(opt, held, time.Now().Add(b.Patience)); err != nil {
			return err
		}
		err := retryEINTR(call)
		if !errors.Is(err, unix.EAGAIN) {
			return err
		}
		impatient := b.Impatient
		b.Impatient = nil
		impatient()
	}
	if err := b.setTimeout(opt, held, deadline); err != nil {
		return err
	}
	return retryEINTR(call)
}

func retryEINTR(call func() error) error {
	for {
		if err := call(); err != unix.EINTR {
			return err
		}
	}
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
// blocking socket) into os.ErrDeadlineExceeded. Errors that are not the
// call's own (a deadline already past, a failed setsockopt) pass as they
// are.
func blockingError(call string, err error) error {
	errno, ok := err.(unix.Errno)
	switch {
	case !ok:
		return err
	case errno == unix.EAGAIN || errno == unix.EWOULDBLOCK:
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
