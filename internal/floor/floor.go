// Package floor is the reference the benchmarks compare against: the
// fewest system calls that move descriptors between two processes with
// golang.org/x/sys/unix on blocking sockets, with no framing and no
// allocation per operation.
//
// A request is one byte from the receiver. The answer is the sender's
// descriptors, at most BatchSize per sendmsg, each sendmsg carrying one data
// byte (a stream sendmsg without data loses its descriptors on Linux).
//
// Two floors: without acknowledgement (Ack false) the sender is done once
// its last sendmsg returns; with it (Ack true, the message pattern of the
// protocol: request, set, acknowledgement) the receiver writes one byte
// once it holds every descriptor, and the sender reads it before it takes
// the next request. The second pays the wake-up the protocol's ACK costs,
// so that a ratio against it shows what framing, checks and package net
// cost, apart from the round trip itself.
package floor

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BatchSize is the most descriptors one message carries: musl's limit, and
// the protocol's.
const BatchSize = 252

// ErrTruncated means the kernel set MSG_CTRUNC on a receive.
var ErrTruncated = errors.New("floor: control data truncated")

// Sender answers each request on a socket with the same descriptors.
type Sender struct {
	sock    int
	ack     bool
	batches [][]byte // one SCM_RIGHTS control message per sendmsg, built once
	data    [1]byte
}

// NewSender prepares the control messages for fds, once. With ack, every
// answer waits for the receiver's acknowledgement.
func NewSender(sock int, fds []int, ack bool) *Sender {
	return &Sender{sock: sock, ack: ack, batches: RightsBatches(fds)}
}

// RightsBatches is one SCM_RIGHTS control message for every BatchSize
// descriptors of fds, in order.
func RightsBatches(fds []int) [][]byte {
	var batches [][]byte
	for i := 0; i < len(fds); i += BatchSize {
		batches = append(batches, unix.UnixRights(fds[i:min(i+BatchSize, len(fds))]...))
	}
	return batches
}

// Reset points the sender at another socket, keeping its control
// messages.
func (s *Sender) Reset(sock int) { s.sock = sock }

// Serve answers requests until the peer closes the socket (nil) or an
// error.
func (s *Sender) Serve() error {
	var req [1]byte
	for {
		n, err := unix.Read(s.sock, req[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("read", err)
		}
		if n == 0 {
			return nil
		}
		if err := s.Answer(); err != nil {
			return err
		}
	}
}

// Answer sends the descriptors once, and with ack waits for the
// acknowledgement.
func (s *Sender) Answer() error {
	for _, oob := range s.batches {
		for {
			err := unix.Sendmsg(s.sock, s.data[:], oob, nil, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return os.NewSyscallError("sendmsg", err)
			}
			break
		}
	}
	if !s.ack {
		return nil
	}
	var ack [1]byte
	for {
		n, err := unix.Read(s.sock, ack[:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return os.NewSyscallError("read", err)
		case n == 0:
			return errors.New("floor: the receiver closed before its acknowledgement")
		}
		return nil
	}
}

// Receiver asks for descriptors and collects them, reusing its buffers.
type Receiver struct {
	sock int
	ack  bool
	oob  []byte
	req  [1]byte
	data [64]byte
	fds  []int
}

// NewReceiver offers a control buffer with room for one descriptor more
// than a batch, so that an oversized message shows as truncation. With ack,
// it acknowledges every complete answer.
func NewReceiver(sock int, ack bool) *Receiver {
	return &Receiver{sock: sock, ack: ack, oob: make([]byte, unix.CmsgSpace((BatchSize+1)*4))}
}

// Reset points the receiver at another socket, keeping its buffers.
func (r *Receiver) Reset(sock int) { r.sock = sock }

// Request sends a request and returns the n descriptors of the answer,
// close-on-exec. The slice is reused by the next call; the descriptors
// belong to the caller.
func (r *Receiver) Request(n int) ([]int, error) {
	if err := WriteFull(r.sock, r.req[:]); err != nil {
		return nil, err
	}
	r.fds = r.fds[:0]
	for len(r.fds) < n {
		_, oobn, flags, _, err := unix.Recvmsg(r.sock, r.data[:], r.oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			CloseAll(r.fds)
			return nil, os.NewSyscallError("recvmsg", err)
		}
		if r.fds, err = takeBatch(r.fds, r.oob[:oobn], flags, n); err != nil {
			return nil, err
		}
	}
	if r.ack {
		if err := WriteFull(r.sock, r.req[:]); err != nil {
			CloseAll(r.fds)
			return nil, err
		}
	}
	return r.fds, nil
}

// takeBatch appends the descriptors of one received message, whose
// control data is oob, to fds, out of the n asked for. A message that was
// truncated or carried none fails, and every descriptor of the answer is
// closed.
func takeBatch(fds []int, oob []byte, flags, n int) ([]int, error) {
	before := len(fds)
	fds = AppendRights(fds, oob)
	if flags&unix.MSG_CTRUNC != 0 {
		CloseAll(fds)
		return nil, ErrTruncated
	}
	if len(fds) == before {
		CloseAll(fds)
		return nil, fmt.Errorf("floor: a message without descriptors after %d of %d", before, n)
	}
	return fds, nil
}

// WriteFull writes all of p on the blocking socket fd.
func WriteFull(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		p = p[n:]
	}
	return nil
}

// AppendRights appends the descriptors of every SCM_RIGHTS message in oob
// to fds, without allocating when fds has room. Malformed control data ends
// the walk; what was found so far is kept so that the caller can close it.
func AppendRights(fds []int, oob []byte) []int {
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return fds
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			for i := hdr; i+4 <= l; i += 4 {
				fds = append(fds, int(*(*int32)(unsafe.Pointer(&oob[i]))))
			}
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(oob) {
			return fds
		}
		oob = oob[next:]
	}
	return fds
}

// CloseAll closes fds with one close_range per run of consecutive numbers.
// The kernel hands out the lowest free numbers, so a received set is a few
// such runs; a run holds only numbers from fds, so nothing else is closed.
func CloseAll(fds []int) {
	for i := 0; i < len(fds); {
		j := i + 1
		for j < len(fds) && fds[j] == fds[j-1]+1 {
			j++
		}
		if j-i == 1 || unix.CloseRange(uint(fds[i]), uint(fds[j-1]), 0) != nil {
			for _, fd := range fds[i:j] {
				unix.Close(fd)
			}
		}
		i = j
	}
}

// ServeAccepted answers one request per connection accepted on the
// blocking listening socket ln until ln is shut down (accept4 then fails
// with EINVAL, and ServeAccepted returns nil).
func ServeAccepted(ln int, fds []int, ack bool) error {
	sender := NewSender(-1, fds, ack)
	for {
		conn, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		switch {
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case err == unix.EINVAL:
			return nil
		case err != nil:
			return os.NewSyscallError("accept4", err)
		}
		sender.Reset(conn)
		err = sender.Serve()
		unix.Close(conn)
		if err != nil {
			return err
		}
	}
}

// ListenUnix binds a blocking, close-on-exec unix stream socket at path
// and listens on it, returning it as a file.
func ListenUnix(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("listen", err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// ListenerDups opens one TCP listener on 127.0.0.1 and returns it with n
// close-on-exec duplicates of it: the set a restarting server hands out.
// The caller closes the duplicates and the listener.
func ListenerDups(n int) (*os.File, []int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "tcp listener")
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		f.Close()
		return nil, nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		f.Close()
		return nil, nil, os.NewSyscallError("listen", err)
	}
	fds := make([]int, 0, n)
	for range n {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			CloseAll(fds)
			f.Close()
			return nil, nil, os.NewSyscallError("fcntl", err)
		}
		fds = append(fds, d)
	}
	return f, fds, nil
}
