package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// codeErr is a failure with its protocol error code.
type codeErr struct {
	code wire.Code
	msg  string
}

func (e *codeErr) Error() string { return e.code.String() + ": " + e.msg }
func (e *codeErr) Code() string  { return e.code.String() }

func fail(code wire.Code, format string, args ...any) error {
	return &codeErr{code, fmt.Sprintf(format, args...)}
}

// setTimeouts bounds every read and write on fd (SO_RCVTIMEO/SO_SNDTIMEO):
// a blocked call returns EAGAIN when it passes.
func setTimeouts(fd int, read, write time.Duration) {
	if read > 0 {
		tv := unix.NsecToTimeval(read.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if write > 0 {
		tv := unix.NsecToTimeval(write.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
}

// sendAll writes data with oob attached to its first byte.
func sendAll(fd int, data, oob []byte) error {
	for {
		n, err := unix.SendmsgN(fd, data, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("sendmsg", err)
		}
		data, oob = data[n:], nil
		if len(data) == 0 {
			return nil
		}
	}
}

var errPeerClosed = errors.New("peer closed")

// scmPidfd is Linux's SCM_PIDFD control message type.
const scmPidfd = 4

// conn is one protocol connection on a raw blocking descriptor.
type conn struct {
	fd           int
	dec          wire.Decoder
	oob          []byte
	cloexec      bool
	oneCmsg      bool
	ignoreCtrunc bool
	littleEndian bool
	// timeout bounds each frame read as a whole, from the wait for its
	// first byte to its last (TRN-8); 0 waits forever.
	timeout time.Duration
	// perRead bounds each read instead (the per-read mutant).
	perRead bool
}

func newConn(fd int) *conn {
	return &conn{fd: fd, oob: make([]byte, unix.CmsgSpace(253*4)+unix.CmsgSpace(64)), cloexec: true}
}

// fill reads once more into the decoder.
func (c *conn) fill() error {
	flags := 0
	if c.cloexec {
		flags = unix.MSG_CMSG_CLOEXEC
	}
	for {
		n, oobn, rflags, _, err := unix.Recvmsg(c.fd, c.dec.Space(64<<10), c.oob, flags)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return fail(wire.CodePeerClosed, "deadline passed")
		}
		if err != nil {
			return os.NewSyscallError("recvmsg", err)
		}
		fds := c.parseRights(c.oob[:oobn])
		if rflags&unix.MSG_CTRUNC != 0 && !c.ignoreCtrunc {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fail(wire.CodeTruncated, "control data truncated")
		}
		c.dec.Commit(n)
		c.dec.AddFds(fds)
		if n == 0 {
			return errPeerClosed
		}
		return nil
	}
}

func (c *conn) parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i, m := range msgs {
		if c.oneCmsg && i > 0 {
			break
		}
		switch {
		case m.Header.Level != unix.SOL_SOCKET:
		case m.Header.Type == unix.SCM_RIGHTS:
			got, err := unix.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, got...)
			}
		case m.Header.Type == scmPidfd && len(m.Data) >= 4:
			// A descriptor the platform documents in another message:
			// not part of the set, closed (TRN-6).
			unix.Close(int(int32(binary.NativeEndian.Uint32(m.Data))))
		}
	}
	return fds
}

// next returns the next frame, reading as needed.
func (c *conn) next() (wire.Frame, error) {
	var deadline time.Time
	if c.timeout > 0 {
		deadline = time.Now().Add(c.timeout)
	}
	for {
		f, ok, err := c.dec.Next()
		if err != nil {
			if errors.Is(err, wire.ErrTooLarge) {
				return f, fail(wire.CodeTooLarge, "%v", err)
			}
			return f, fail(wire.CodeMalformed, "%v", err)
		}
		if ok {
			return f, nil
		}
		if c.perRead {
			deadline = time.Now().Add(c.timeout)
		}
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return f, fail(wire.CodePeerClosed, "deadline passed inside a frame")
			}
			setTimeouts(c.fd, left, 0)
		}
		if err := c.fill(); err != nil {
			if errors.Is(err, errPeerClosed) && c.dec.Buffered() > 0 {
				return f, fail(wire.CodePeerClosed, "end of stream inside a frame")
			}
			return f, err
		}
	}
}

// write sends a frame, little-endian for the little-endian mutant.
func (c *conn) write(frame []byte, fds ...int) error {
	if c.littleEndian {
		frame = toLittleEndian(frame)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return sendAll(c.fd, frame, oob)
}

func (c *conn) sendError(code wire.Code, msg string) {
	c.write(wire.AppendError(nil, wire.ErrorFrame{Code: code, Message: msg}))
}

// toLittleEndian rewrites every integer of one well-formed frame
// little-endian.
func toLittleEndian(frame []byte) []byte {
	out := append([]byte(nil), frame...)
	swap16 := func(b []byte) { binary.LittleEndian.PutUint16(b, binary.BigEndian.Uint16(b)) }
	swap32 := func(b []byte) { binary.LittleEndian.PutUint32(b, binary.BigEndian.Uint32(b)) }
	t := wire.Type(out[0])
	p := out[wire.HeaderSize:]
	switch t {
	case wire.TypeWelcome:
		swap16(p[0:2])
	case wire.TypeEnd, wire.TypeAck:
		swap32(p[0:4])
	case wire.TypeError:
		swap16(p[0:2])
		swap16(p[2:4])
	case wire.TypeBatch:
		for len(p) >= wire.RecordOverhead {
			n := binary.BigEndian.Uint32(p[2:6])
			swap32(p[2:6])
			p = p[wire.RecordOverhead+int(n):]
		}
	}
	swap16(out[2:4])
	swap32(out[4:8])
	return out
}

// fdKind tells what fd is, for the receiver's kind check.
func fdKind(fd int) wire.Kind {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return wire.KindRaw
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return wire.KindFile
	}
	typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if typ == unix.SOCK_DGRAM {
		return wire.KindPacket
	}
	if l, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); l != 0 {
		return wire.KindListener
	}
	return wire.KindStream
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
