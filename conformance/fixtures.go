package conformance

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/harness"
)

// fixture is a descriptor the suite creates and hands over, with what it
// needs to recognise it (its identity) and to prove that a process holding
// it can use it (a challenge only the real descriptor answers).
type fixture struct {
	name    string
	kind    wire.Kind // what it truly is
	fd      int       // the suite's own descriptor (the original)
	id      harness.FileID
	meta    []byte
	hasMeta bool

	// challenge asks adapter a, which reports this descriptor at index,
	// to prove it holds it; nil when there is no challenge.
	challenge func(a *adapterProc, index int) error
	closers   []func()
}

func (f *fixture) close() {
	for _, c := range f.closers {
		c()
	}
	f.closers = nil
}

func (f *fixture) record() wire.Record {
	return wire.Record{Kind: f.kind, HasMeta: f.hasMeta, Meta: f.meta}
}

func (f *fixture) withMeta(meta []byte) *fixture {
	f.meta, f.hasMeta = meta, true
	return f
}

func (f *fixture) noMeta() *fixture {
	f.meta, f.hasMeta = nil, false
	return f
}

func nonce() []byte {
	b := make([]byte, 12)
	rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

func finish(f *fixture, fd int, kind wire.Kind, name string) (*fixture, error) {
	id, err := harness.FileIDOf(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	f.fd, f.id, f.kind, f.name = fd, id, kind, name
	f.closers = append(f.closers, func() { unix.Close(fd) })
	return f, nil
}

// challengeAnswer runs one challenge request and compares its data.
func challengeAnswer(a *adapterProc, index int, action string, offset, length int, want []byte) error {
	var resp struct {
		OK    bool        `json:"ok"`
		Data  string      `json:"data"`
		Error *adapterErr `json:"error"`
	}
	req := map[string]any{"op": "challenge", "index": index, "action": action,
		"offset": offset, "length": length, "timeout_ms": int(a.wait / time.Millisecond)}
	if err := a.call(req, "challengeResponse", &resp); err != nil {
		return err
	}
	if !resp.OK {
		return fmt.Errorf("%s challenge on descriptor %d failed: %v", action, index, resp.Error)
	}
	got, err := base64.StdEncoding.DecodeString(resp.Data)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s challenge on descriptor %d answered %q, want %q", action, index, got, want)
	}
	return nil
}

// newTCPListener is a listening TCP socket on 127.0.0.1, in non-blocking
// mode like a Go or event-loop server's. Challenge: the holder accepts a
// connection the suite makes and reports the nonce the suite wrote on it.
func newTCPListener() (*fixture, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("listen", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	f := &fixture{}
	f.challenge = func(a *adapterProc, index int) error {
		c, err := net.DialTimeout("tcp", addr, a.wait)
		if err != nil {
			return err
		}
		defer c.Close()
		n := nonce()
		if _, err := c.Write(n); err != nil {
			return err
		}
		c.(*net.TCPConn).CloseWrite()
		return challengeAnswer(a, index, "accept", 0, 0, n)
	}
	return finish(f, fd, wire.KindListener, "tcp listener")
}

// newTCPStream is the server end of an established TCP connection, in
// blocking mode. Challenge: the suite writes a nonce on the other end and
// the holder reports what one recv returns.
func newTCPStream() (*fixture, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	server, err := ln.Accept()
	if err != nil {
		client.Close()
		return nil, err
	}
	// A blocking descriptor of its own for the server end: File dups it
	// (F_DUPFD_CLOEXEC) and puts that new description in blocking mode.
	file, err := server.(*net.TCPConn).File()
	server.Close()
	if err != nil {
		client.Close()
		return nil, err
	}
	fd, err := unix.FcntlInt(file.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	file.Close()
	if err != nil {
		client.Close()
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := &fixture{}
	f.closers = append(f.closers, func() { client.Close() })
	f.challenge = func(a *adapterProc, index int) error {
		n := nonce()
		client.SetWriteDeadline(time.Now().Add(a.wait))
		if _, err := client.Write(n); err != nil {
			return err
		}
		return challengeAnswer(a, index, "recv", 0, 0, n)
	}
	return finish(f, fd, wire.KindStream, "tcp stream")
}

// newUDP is a UDP socket bound on 127.0.0.1, non-blocking. Challenge: the
// suite sends it a datagram and the holder reports what one recv returns.
func newUDP() (*fixture, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*unix.SockaddrInet4).Port}
	f := &fixture{}
	f.challenge = func(a *adapterProc, index int) error {
		c, err := net.DialUDP("udp", nil, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		n := nonce()
		if _, err := c.Write(n); err != nil {
			return err
		}
		return challengeAnswer(a, index, "recv", 0, 0, n)
	}
	return finish(f, fd, wire.KindPacket, "udp socket")
}

// newFile is a memory file (its own inode) holding random bytes.
// Challenge: the holder reports a pread of part of it.
func newFile() (*fixture, error) {
	fd, err := unix.MemfdCreate("graceful-conformance", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	content := make([]byte, 256)
	rand.Read(content)
	if _, err := unix.Pwrite(fd, content, 0); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("pwrite", err)
	}
	f := &fixture{}
	f.challenge = func(a *adapterProc, index int) error {
		return challengeAnswer(a, index, "pread", 100, 48, content[100:148])
	}
	return finish(f, fd, wire.KindFile, "file")
}

// fixtureSet is the descriptors of one scenario.
type fixtureSet []*fixture

func (s fixtureSet) close() {
	for _, f := range s {
		f.close()
	}
}

func (s fixtureSet) fds() []int {
	out := make([]int, len(s))
	for i, f := range s {
		out[i] = f.fd
	}
	return out
}

func (s fixtureSet) records() []wire.Record {
	out := make([]wire.Record, len(s))
	for i, f := range s {
		out[i] = f.record()
	}
	return out
}

func (s fixtureSet) idents() map[harness.FileID]bool {
	out := map[harness.FileID]bool{}
	for _, f := range s {
		out[f.id] = true
	}
	return out
}

// mixedSet is one descriptor of each kind, each with its own metadata
// (one with none, one with empty metadata), so that any mix-up shows.
func mixedSet() (fixtureSet, error) {
	makers := []func() (*fixture, error){newTCPListener, newTCPStream, newUDP, newFile}
	var s fixtureSet
	for i, mk := range makers {
		f, err := mk()
		if err != nil {
			s.close()
			return nil, err
		}
		switch i {
		case 1:
			f.noMeta()
		case 2:
			f.withMeta([]byte{})
		default:
			f.withMeta([]byte(fmt.Sprintf("%d:%s\x00\xff", i, f.name)))
		}
		s = append(s, f)
	}
	return s, nil
}

// fileSet is n memory files, each with distinct metadata, in an order that
// is not the order they were made in (nor that of their inode numbers):
// an implementation that sorts the set is caught.
func fileSet(n int) (fixtureSet, error) {
	var made fixtureSet
	for i := 0; i < n; i++ {
		f, err := newFile()
		if err != nil {
			made.close()
			return nil, err
		}
		made = append(made, f)
	}
	s := make(fixtureSet, n)
	for i, j := range scramble(n) {
		s[j] = made[i]
	}
	for i, f := range s {
		f.withMeta([]byte(fmt.Sprintf("file-%d", i)))
	}
	return s, nil
}
