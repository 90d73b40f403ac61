package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/conformance/internal/kit"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// engine is the raw implementation with one fault.
type engine struct {
	fault    string
	mu       sync.Mutex
	ln       int
	busy     atomic.Bool
	req      kit.ServeRequest
	fds      []int
	recs     []wire.Record
	outcomes chan kit.Outcome
}

// Serve listens on the socket path and serves every connection.
func (e *engine) Serve(req kit.ServeRequest) (<-chan kit.Outcome, error) {
	e.req = req
	for _, d := range req.Descriptors {
		meta, has := d.Meta, d.HasMeta
		if d.KV != nil {
			meta, has = wire.AppendMeta(nil, d.KV), true
		}
		if len(meta) > wire.MaxMetaSize {
			if e.fault != "truncate-meta" {
				return nil, fail(wire.CodeTooLarge, "metadata of %d bytes", len(meta))
			}
			meta = meta[:wire.MaxMetaSize]
		}
		e.recs = append(e.recs, wire.Record{Kind: kindOf(d.Kind), HasMeta: has, Meta: meta})
		e.fds = append(e.fds, d.Fd)
	}
	if e.fault == "wrong-fd" && len(e.fds) > 0 {
		nfd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		e.fds[0] = nfd
	}
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// The socket file is born 0600: no window with wider permissions.
	old := syscall.Umask(0o177)
	err = unix.Bind(ln, &unix.SockaddrUnix{Name: req.Socket})
	syscall.Umask(old)
	if err != nil {
		unix.Close(ln)
		return nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(ln, 16); err != nil {
		unix.Close(ln)
		return nil, os.NewSyscallError("listen", err)
	}
	e.ln = ln
	e.outcomes = make(chan kit.Outcome, 64)
	go e.accept()
	return e.outcomes, nil
}

func kindOf(name string) wire.Kind {
	for k := wire.KindRaw; k <= wire.KindPacket; k++ {
		if k.String() == name {
			return k
		}
	}
	return wire.KindRaw
}

func (e *engine) accept() {
	for {
		fd, _, err := unix.Accept4(e.ln, unix.SOCK_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		go func() {
			defer unix.Close(fd)
			ready, err := e.session(fd)
			e.outcomes <- kit.Outcome{Ready: ready, Err: err}
		}()
	}
}

// session serves one connection.
func (e *engine) session(fd int) (ready bool, err error) {
	setTimeouts(fd, 0, e.req.Timeout)
	c := newConn(fd)
	c.perRead = e.fault == "per-read"
	c.timeout = e.req.Timeout
	c.littleEndian = e.fault == "little-endian"
	refuse := func(code wire.Code, format string, args ...any) (bool, error) {
		err := fail(code, format, args...)
		c.sendError(code, err.Error())
		return false, err
	}

	if e.fault != "any-uid" {
		cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return false, os.NewSyscallError("getsockopt", err)
		}
		if int(cred.Uid) != os.Geteuid() {
			return refuse(wire.CodeUnauthorized, "peer uid %d", cred.Uid)
		}
	}
	f, err := c.next()
	if err != nil {
		return e.readFailed(c, err)
	}
	if f.Header.Type != wire.TypeHello {
		return refuse(wire.CodeMalformed, "expected HELLO, got %v", f.Header.Type)
	}
	h, err := wire.ParseHello(f.Payload)
	if err != nil {
		return refuse(wire.CodeMalformed, "%v", err)
	}
	if h.MinVersion > h.MaxVersion || h.MinVersion > 1 || h.MaxVersion < 1 {
		return refuse(wire.CodeUnsupportedVersion, "versions %d..%d; this sender speaks 1..1", h.MinVersion, h.MaxVersion)
	}
	if !e.busy.CompareAndSwap(false, true) {
		return refuse(wire.CodeBusy, "another receiver is taking the set")
	}
	defer e.busy.Store(false)

	if err := c.write(wire.AppendWelcome(nil, 1)); err != nil {
		return false, err
	}
	per := wire.MaxFdsPerBatch
	if e.fault == "batch-253" {
		per = 253
	}
	for start := 0; start < len(e.recs); {
		end, size := start, 0
		for end < len(e.recs) && end-start < per && size+wire.RecordOverhead+len(e.recs[end].Meta) <= wire.MaxPayload {
			size += wire.RecordOverhead + len(e.recs[end].Meta)
			end++
		}
		fds := e.fds[start:end]
		if e.fault == "blocking" {
			for _, d := range fds {
				if fl, err := unix.FcntlInt(uintptr(d), unix.F_GETFL, 0); err == nil {
					unix.FcntlInt(uintptr(d), unix.F_SETFL, fl&^unix.O_NONBLOCK)
				}
			}
		}
		frame := wire.AppendBatch(nil, e.recs[start:end])
		if e.fault == "late-fds" {
			err = c.write(frame[:len(frame)-1])
			if err == nil {
				err = sendAll(fd, frame[len(frame)-1:], unix.UnixRights(fds...))
			}
		} else {
			err = c.write(frame, fds...)
		}
		if err != nil {
			return refuse(wire.CodeSenderFailed, "sending descriptors %d to %d: %v", start, end, err)
		}
		start = end
	}
	if err := c.write(wire.AppendCount(nil, wire.TypeEnd, uint32(len(e.recs)))); err != nil {
		return false, err
	}

	f, err = c.next()
	if e.fault == "no-ack-check" {
		return false, nil
	}
	if err != nil {
		return e.readFailed(c, err)
	}
	switch f.Header.Type {
	case wire.TypeAck:
		n, err := wire.ParseCount(f.Payload)
		if err != nil || int(n) != len(e.recs) {
			return refuse(wire.CodeMalformed, "ACK for %d descriptors, %d sent", n, len(e.recs))
		}
	case wire.TypeError:
		ef, err := wire.ParseError(f.Payload)
		if err != nil {
			return refuse(wire.CodeMalformed, "%v", err)
		}
		return false, fmt.Errorf("receiver sent ERROR %v: %s", ef.Code, ef.Message)
	default:
		return refuse(wire.CodeMalformed, "expected ACK, got %v", f.Header.Type)
	}
	if e.fault == "ready-on-ack" {
		return true, nil
	}
	c.timeout = e.req.ReadyTimeout
	f, err = c.next()
	if err != nil {
		return false, nil // received, not ready
	}
	if f.Header.Type != wire.TypeReady {
		return refuse(wire.CodeMalformed, "expected READY, got %v", f.Header.Type)
	}
	return true, nil
}

// readFailed ends a session whose read failed, answering ERROR where the
// input was at fault.
func (e *engine) readFailed(c *conn, err error) (bool, error) {
	closeAll(c.dec.TakeFds())
	if errors.Is(err, errPeerClosed) {
		return false, fail(wire.CodePeerClosed, "the receiver closed")
	}
	var ce *codeErr
	if errors.As(err, &ce) && ce.code != wire.CodePeerClosed {
		c.sendError(ce.code, ce.msg)
	}
	return false, err
}

// Close stops serving.
func (e *engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ln > 0 {
		unix.Shutdown(e.ln, unix.SHUT_RDWR)
		unix.Close(e.ln)
		e.ln = 0
		unix.Unlink(e.req.Socket)
	}
	return nil
}
