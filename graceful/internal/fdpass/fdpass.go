// Package fdpass is the thin system-call layer under graceful: it moves
// bytes and descriptors over a unix socket, reads control data without
// losing descriptors, and asks the kernel who the peer is and what a
// descriptor is. It knows nothing of the protocol's frames.
package fdpass

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// MaxFds is the most descriptors one control message may carry here:
// Linux's SCM_MAX_FD is 253, musl's 252.
const MaxFds = 252

// ErrTruncated means the kernel set MSG_CTRUNC: descriptors were dropped
// because the buffer was too small, the process was at its open-file limit,
// or a security module refused one.
var ErrTruncated = errors.New("control data truncated (MSG_CTRUNC)")

// OOBSize is a control buffer that holds one more descriptor than a
// conforming peer sends, so that a too-large message shows as truncation,
// plus room for the messages the kernel adds beside SCM_RIGHTS when the
// socket asks for them (SO_PASSCRED, SO_PASSPIDFD on Linux).
var OOBSize = unix.CmsgSpace((MaxFds+1)*4) + extraOOB

// RawFd returns the descriptor behind c without dup and without touching its
// blocking mode, as (*os.File).Fd would. The caller keeps c alive and open
// for as long as it uses the number.
func RawFd(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var fd int
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// AppendRights appends one SCM_RIGHTS control message carrying fds to b,
// without allocating when b has room.
func AppendRights(b []byte, fds []int) []byte {
	if len(fds) == 0 {
		return b
	}
	start := len(b)
	space := unix.CmsgSpace(len(fds) * 4)
	b = slices.Grow(b, space)[:start+space]
	msg := b[start:]
	clear(msg)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&msg[0]))
	h.Level = unix.SOL_SOCKET
	h.Type = unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(len(fds) * 4))
	data := msg[unix.CmsgLen(0):]
	for i, fd := range fds {
		*(*int32)(unsafe.Pointer(&data[i*4])) = int32(fd)
	}
	return b
}

// Write writes all of data on c, with the descriptors attached to the first
// byte (TRN-3). A stream socket may take part of a large message: the rest
// goes out with plain writes. Deadlines set on c apply.
func Write(c *net.UnixConn, data []byte, oob []byte) error {
	n, _, err := c.WriteMsgUnix(data, oob, nil)
	if err != nil {
		return err
	}
	if n < len(data) {
		_, err = c.Write(data[n:])
	}
	return err
}

// Read reads into p and appends every descriptor of every SCM_RIGHTS
// control message to fds (TRN-6). Descriptors arrive close-on-exec
// (TRN-4). On MSG_CTRUNC it closes what came with this read and returns
// ErrTruncated (TRN-5); on any error the returned fds are only those the
// caller passed in. io.EOF means the peer closed the connection.
func Read(c *net.UnixConn, p, oob []byte, fds []int) (int, []int, error) {
	n, oobn, flags, _, err := c.ReadMsgUnix(p, oob)
	n, oobn = max(n, 0), max(oobn, 0) // -1 on some errors
	before := len(fds)
	fds, perr := appendFds(fds, oob[:oobn])
	if perr == nil && flags&unix.MSG_CTRUNC != 0 {
		perr = ErrTruncated
	}
	if perr != nil {
		CloseAll(fds[before:])
		return n, fds[:before], perr
	}
	return n, fds, err
}

// appendFds walks every control message. Descriptors of SCM_RIGHTS
// messages are kept; a message it cannot parse makes it close what it took
// from that buffer and fail.
func appendFds(fds []int, oob []byte) ([]int, error) {
	hdr := unix.CmsgLen(0)
	before := len(fds)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			CloseAll(fds[before:])
			return fds[:before], fmt.Errorf("control message of length %d in %d bytes", l, len(oob))
		}
		data := oob[hdr:l]
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			for i := 0; i+4 <= len(data); i += 4 {
				fds = append(fds, int(*(*int32)(unsafe.Pointer(&data[i]))))
			}
		} else {
			closeCarried(h, data)
		}
		// The last message may come without its padding.
		oob = oob[min(unix.CmsgSpace(l-hdr), len(oob)):]
	}
	return fds, nil
}

// CloseAll closes every descriptor in fds.
func CloseAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Kind reports what fd is.
func Kind(fd int) (wire.Kind, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return wire.KindRaw, os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return wire.KindFile, nil
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return wire.KindRaw, os.NewSyscallError("getsockopt", err)
	}
	if typ == unix.SOCK_DGRAM {
		return wire.KindPacket, nil
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return wire.KindRaw, os.NewSyscallError("getsockopt", err)
	}
	if listening != 0 {
		return wire.KindListener, nil
	}
	return wire.KindStream, nil
}

// Dup duplicates fd, close-on-exec, without changing the shared open file
// description.
func Dup(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}

// Cred is what the kernel recorded of the process at the other end of a
// unix connection when the connection was made. PID is -1 where the system
// does not say (getpeereid).
type Cred struct{ PID, UID, GID int }

// PeerCred returns the credentials of the process at the other end of c.
func PeerCred(c syscall.Conn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{PID: -1, UID: -1, GID: -1}, err
	}
	var (
		cred Cred
		serr error
	)
	if err := rc.Control(func(fd uintptr) { cred, serr = peerCred(int(fd)) }); err != nil {
		return Cred{PID: -1, UID: -1, GID: -1}, err
	}
	return cred, serr
}

// PassRights reports whether the socket c accepts descriptors (SO_PASSRIGHTS,
// Linux 6.16 and later). known is false where the kernel has no such
// option: there a socket always accepts them.
func PassRights(c syscall.Conn) (on, known bool, err error) {
	err = control(c, func(fd int) error {
		var gerr error
		on, known, gerr = passRights(fd)
		return gerr
	})
	return on, known, err
}

// SetPassRights turns SO_PASSRIGHTS on or off on the socket c. Off, a peer's
// sendmsg that carries descriptors fails (EPERM) and none reaches this
// process. It does nothing where the kernel has no such option.
func SetPassRights(c syscall.Conn, on bool) error {
	return control(c, func(fd int) error { return SetPassRightsFd(fd, on) })
}

// control runs f on the descriptor behind c.
func control(c syscall.Conn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
