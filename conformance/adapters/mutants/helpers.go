package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/conformance/internal/procsys"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// overflowUID is the uid the kernel reports for a peer it cannot map
// (AUTH-7).
var overflowUID = procsys.OverflowUID()

// checkPeer applies the credential check (AUTH-1, AUTH-5, AUTH-6, AUTH-7,
// AUTH-8): the overflow uid never, then the policy, by default the same
// effective uid. A refused peer is told UNAUTHORIZED by the caller.
func (e *engine) checkPeer(c *conn, policy *[]int) error {
	switch {
	case e.on("any-uid"), e.on("dial-no-check") && e.dialled:
		return nil
	case e.on("abstract-no-check") && abstractConn(c):
		return nil
	case e.on("abstract-refuse-all") && abstractConn(c):
		return e.refused("no peer on an abstract address")
	}
	cred, err := c.peerCred()
	if err != nil {
		return fail(wire.CodeUnauthorized, "cannot identify the peer: %v", err)
	}
	uid := int(cred.Uid)
	if uid == overflowUID && !e.on("overflow-ok") {
		return e.refused("peer uid %d is the overflow uid", uid)
	}
	if policy != nil && !e.on("policy-ignored") {
		for _, ok := range *policy {
			if ok == uid {
				return nil
			}
		}
		return e.refused("peer uid %d is not in the policy", uid)
	}
	if uid != os.Geteuid() {
		return e.refused("peer uid %d, this process runs as %d", uid, os.Geteuid())
	}
	return nil
}

// abstractConn reports whether c is on a Linux abstract address.
func abstractConn(c *conn) bool {
	for _, a := range []net.Addr{c.uc.LocalAddr(), c.uc.RemoteAddr()} {
		// An unnamed socket shows as "@" alone.
		if n := a.String(); len(n) > 1 && n[0] == '@' {
			return true
		}
	}
	return false
}

func (e *engine) refused(format string, args ...any) error {
	if e.on("auth-malformed-code") {
		return fail(wire.CodeMalformed, format, args...)
	}
	if e.on("auth-welcome-first") {
		return &authWelcome{fail(wire.CodeUnauthorized, format, args...)}
	}
	return fail(wire.CodeUnauthorized, format, args...)
}

// authWelcome is the refusal of the auth-welcome-first mutant, which
// writes WELCOME before its ERROR.
type authWelcome struct{ *codeErr }

// listen creates the listening socket (AUTH-3, AUTH-11, SND-9).
func (e *engine) listen(path string) (*net.UnixListener, error) {
	var fd int
	var err error
	if strings.HasPrefix(path, "@") {
		fd, err = bound(path)
	} else {
		fd, err = e.place(path)
	}
	if err != nil {
		return nil, err
	}
	// Descriptors pushed at a sender are refused outright where the
	// kernel can (SO_PASSRIGHTS, Linux 6.16); accepted sockets inherit it.
	if !e.on("keep-pushed") && !e.on("hold-pushed") {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS, 0)
	}
	if err := unix.Listen(fd, 64); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("listen", err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

func bound(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("bind", err)
	}
	return fd, nil
}

// place binds a socket at path without a window of wider permissions:
// in a new 0700 directory beside it, mode 0600, then renamed into place,
// replacing only a stale socket.
func (e *engine) place(path string) (int, error) {
	if err := e.vacate(path); err != nil {
		return -1, err
	}
	if e.on("chmod-after-bind") || e.on("umask-open") {
		old := syscall.Umask(0)
		if e.on("chmod-after-bind") {
			syscall.Umask(0o022)
		}
		fd, err := bound(path)
		syscall.Umask(old)
		if err == nil && e.on("chmod-after-bind") {
			err = os.Chmod(path, 0o600)
		}
		return fd, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".gfm")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	fd, err := bound(tmp)
	if err != nil {
		return -1, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := os.Rename(tmp, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// errAddrInUse: something other than a stale socket is at the path.
var errAddrInUse = errors.New("address in use")

// vacate removes a stale socket at path, and refuses anything else
// (AUTH-11).
func (e *engine) vacate(path string) error {
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case e.on("replace-anything"):
		return os.RemoveAll(path)
	case st.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%w: %s is a %v, not a socket", errAddrInUse, path, st.Mode().Type())
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	if err == nil {
		return fmt.Errorf("%w: a live server answers at %s", errAddrInUse, path)
	}
	if e.on("refuse-stale") {
		return fmt.Errorf("%w: a socket is at %s", errAddrInUse, path)
	}
	if errors.Is(err, unix.ECONNREFUSED) {
		return os.Remove(path)
	}
	return fmt.Errorf("%w: %s: %v", errAddrInUse, path, err)
}

// encodeKV is the key-value encoding of section 5, keys sorted (META-1).
func encodeKV(e *engine, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if e.on("kv-unsorted") {
		sort.Sort(sort.Reverse(sort.StringSlice(keys)))
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m[k])))
		b = append(b, m[k]...)
	}
	return b
}

// decodeKV decodes section 5 metadata (META-2), with the decoder faults.
func decodeKV(e *engine, b []byte) (map[string]string, error) {
	if len(b) == 0 && e.on("kv-empty-ok") {
		return map[string]string{}, nil
	}
	if len(b) < 4 {
		return nil, errors.New("no pair count")
	}
	n := binary.BigEndian.Uint32(b)
	off := 4
	out := map[string]string{}
	take := func() (string, bool, error) {
		if len(b)-off < 4 {
			return "", false, errors.New("a length runs past the end")
		}
		l := int(binary.BigEndian.Uint32(b[off:]))
		off += 4
		if l > len(b)-off {
			return "", false, errors.New("a length runs past the end")
		}
		s := string(b[off : off+l])
		off += l
		ok := utf8.ValidString(s)
		if e.on("kv-decode-latin1") {
			r := make([]rune, 0, l)
			for _, c := range []byte(s) {
				r = append(r, rune(c))
			}
			s = string(r)
		}
		return s, ok, nil
	}
	for i := uint32(0); i < n; i++ {
		if off == len(b) && e.on("kv-lax-count") {
			break
		}
		k, kok, err := take()
		if err != nil {
			return nil, err
		}
		v, vok, err := take()
		if err != nil {
			return nil, err
		}
		if !kok || (!vok && !e.on("kv-lax-utf8-value")) {
			return nil, errors.New("not UTF-8")
		}
		if _, dup := out[k]; dup && !e.on("kv-dup-ok") {
			return nil, fmt.Errorf("key %q repeated", k)
		}
		out[k] = v
	}
	if off != len(b) && !e.on("kv-trailing-ok") {
		return nil, fmt.Errorf("%d bytes after the last pair", len(b)-off)
	}
	return out, nil
}

func kindOf(name string) wire.Kind {
	for k := wire.KindRaw; k <= wire.KindPacket; k++ {
		if k.String() == name {
			return k
		}
	}
	return wire.KindRaw
}

// fdKind tells what fd is, for the receiver's kind check (RCV-8).
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

// toLittleEndian rewrites every integer of one well-formed frame
// little-endian.
func toLittleEndian(frame []byte) []byte {
	out := append([]byte(nil), frame...)
	swap16 := func(b []byte) { binary.LittleEndian.PutUint16(b, binary.BigEndian.Uint16(b)) }
	swap32 := func(b []byte) { binary.LittleEndian.PutUint32(b, binary.BigEndian.Uint32(b)) }
	p := out[wire.HeaderSize:]
	switch wire.Type(out[0]) {
	case wire.TypeHello:
		swap16(p[8:10])
		swap16(p[10:12])
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

// sortByFd sorts the set by descriptor number (the sorted-fds mutant).
func sortByFd(fds []int, recs []wire.Record) {
	idx := make([]int, len(fds))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return fds[idx[a]] < fds[idx[b]] })
	f2, r2 := make([]int, len(fds)), make([]wire.Record, len(recs))
	for i, j := range idx {
		f2[i], r2[i] = fds[j], recs[j]
	}
	copy(fds, f2)
	copy(recs, r2)
}

func itoa(n int) string { return strconv.Itoa(n) }

// lockThread pins the calling goroutine to an OS thread for good (the
// thread-per-conn mutant).
func lockThread() { runtime.LockOSThread() }
