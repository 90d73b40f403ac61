package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// codeErr is a failure with its protocol error code. Whether the peer is
// told (an ERROR frame) depends on how it arose: see tell.
type codeErr struct {
	code string // a protocol code name, "TIMEOUT", "UNCONFIRMED" or "OTHER"
	msg  string
	// remote: the peer reported it in an ERROR frame, which is never
	// answered. quiet: nothing is sent for it (a deadline, the peer gone).
	remote, quiet bool
}

func (e *codeErr) Error() string { return e.code + ": " + e.msg }
func (e *codeErr) Code() string  { return e.code }

func fail(code wire.Code, format string, args ...any) *codeErr {
	return &codeErr{code: code.String(), msg: fmt.Sprintf(format, args...)}
}

func timeout(format string, args ...any) *codeErr {
	return &codeErr{code: "TIMEOUT", msg: fmt.Sprintf(format, args...), quiet: true}
}

func peerClosed(format string, args ...any) *codeErr {
	return &codeErr{code: wire.CodePeerClosed.String(), msg: fmt.Sprintf(format, args...), quiet: true}
}

// remoteErr is the failure an ERROR frame from the peer reports.
func (e *engine) remoteErr(payload []byte) *codeErr {
	if e.on("strict-error-text") && len(payload) >= 4 && !utf8.Valid(payload[4:]) {
		return fail(wire.CodeMalformed, "ERROR message is not UTF-8")
	}
	ef, err := wire.ParseError(payload)
	if err != nil {
		// A malformed ERROR frame is still the end, never answered.
		return &codeErr{code: "OTHER", msg: "peer sent a malformed ERROR: " + err.Error(), remote: true}
	}
	code := ef.Code.String()
	if _, ok := knownCodes[ef.Code]; !ok {
		code = "OTHER"
	}
	return &codeErr{code: code, msg: "peer reported " + ef.Code.String() + ": " + ef.Message, remote: true}
}

var knownCodes = map[wire.Code]bool{
	wire.CodeMalformed: true, wire.CodeUnsupportedVersion: true, wire.CodeUnauthorized: true,
	wire.CodeTooLarge: true, wire.CodeTruncated: true, wire.CodeRejected: true,
	wire.CodeSenderFailed: true, wire.CodePeerClosed: true, wire.CodeBusy: true,
}

// frame is one frame read, with the descriptors of a BATCH.
type frame struct {
	h       wire.Header
	payload []byte
	fds     []int
}

// conn is one protocol connection on a non-blocking socket: goroutines
// wait for it in Go's poller, never on a thread of their own.
type conn struct {
	e    *engine
	uc   *net.UnixConn
	rc   syscall.RawConn
	buf  []byte // bytes read, not yet part of a frame handed out
	fds  []int  // the descriptor queue (RCV-1)
	oob  []byte // nil for a sender: no room for control data (SND-9)
	step time.Duration
	// sessionEnd bounds every step of the current session (LIM-1).
	sessionEnd time.Time
	cloexec    bool
	// midFrame: a write stopped inside a frame; no ERROR may follow.
	midFrame bool
	// kept: descriptors pushed at a sender that the hold-pushed mutant
	// keeps until the connection ends.
	kept []int
	// payloadFirst: read a frame's payload before judging its header.
	payloadFirst bool
	// lenientFds: a BATCH takes what descriptors there are (a fault).
	lenientFds bool
}

// scmPidfd is Linux's SCM_PIDFD control message type.
const scmPidfd = 4

func newConn(e *engine, uc *net.UnixConn, step time.Duration, receiver bool) (*conn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &conn{e: e, uc: uc, rc: rc, step: step, cloexec: !e.on("no-cloexec")}
	switch {
	case receiver && e.on("ctrl-253-only"):
		c.oob = make([]byte, unix.CmsgSpace(253*4))
	case receiver && e.on("ctrl-small"):
		c.oob = make([]byte, unix.CmsgSpace(64*4))
	case receiver:
		// TRN-7: 253 descriptors, credentials and a pidfd.
		c.oob = make([]byte, unix.CmsgSpace(253*4)+unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4))
	case e.on("keep-pushed") || e.on("hold-pushed"):
		c.oob = make([]byte, unix.CmsgSpace(253*4))
	}
	return c, nil
}

func (c *conn) close() {
	closeAll(c.fds)
	c.fds = nil
	closeAll(c.kept)
	c.kept = nil
	c.uc.Close()
}

// peerCred returns the credentials the kernel recorded for the peer.
func (c *conn) peerCred() (*unix.Ucred, error) {
	var cred *unix.Ucred
	var cerr error
	err := c.rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = cerr
	}
	return cred, err
}

// deadline is the end of the next step: its own deadline, or the
// session's if that comes first.
func (c *conn) deadline(step time.Duration) (time.Time, bool) {
	d := time.Now().Add(step)
	if !c.sessionEnd.IsZero() && c.sessionEnd.Before(d) {
		return c.sessionEnd, true
	}
	return d, false
}

// recv reads once: bytes into buf, descriptors into the queue. It returns
// 0 at end of stream.
func (c *conn) recv(deadline time.Time) (int, error) {
	if c.e.on("hang") {
		deadline = time.Time{}
	}
	c.uc.SetReadDeadline(deadline)
	tmp := make([]byte, 64<<10)
	flags := 0
	if c.cloexec {
		flags = unix.MSG_CMSG_CLOEXEC
	}
	var n, oobn, rflags int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, oobn, rflags, _, rerr = unix.Recvmsg(int(fd), tmp, c.oob, flags)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, timeout("deadline passed")
		}
		return 0, err
	}
	if rerr == unix.ECONNRESET {
		return 0, nil // the peer closed with data unread: an end of stream
	}
	if rerr != nil {
		return 0, os.NewSyscallError("recvmsg", rerr)
	}
	fds := c.rights(c.oob[:oobn])
	if c.oob == nil || c.e.on("keep-pushed") || c.e.on("hold-pushed") {
		// A sender: nothing belongs to it. (Without a control buffer
		// the kernel discarded them.)
		if c.e.on("hold-pushed") {
			c.kept = append(c.kept, fds...)
		} else if !c.e.on("keep-pushed") {
			closeAll(fds)
		}
		fds = nil
	}
	if rflags&unix.MSG_CTRUNC != 0 && c.oob != nil && !c.e.on("ignore-ctrunc") && !c.e.on("keep-pushed") && !c.e.on("hold-pushed") {
		if !c.e.on("ctrunc-keep") {
			closeAll(fds)
		}
		if c.e.on("ctrunc-malformed") {
			return 0, fail(wire.CodeMalformed, "control data truncated")
		}
		return 0, fail(wire.CodeTruncated, "control data truncated (MSG_CTRUNC), %d descriptors closed", len(fds))
	}
	c.fds = append(c.fds, fds...)
	c.buf = append(c.buf, tmp[:n]...)
	return n, nil
}

// rights takes the descriptors of every SCM_RIGHTS message (TRN-6) and
// closes those of SCM_PIDFD.
func (c *conn) rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i, m := range msgs {
		if c.e.on("one-cmsg") && i > 0 {
			break
		}
		switch {
		case m.Header.Level != unix.SOL_SOCKET:
		case m.Header.Type == unix.SCM_RIGHTS:
			got, err := unix.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, got...)
			}
		case m.Header.Type == scmPidfd && len(m.Data) >= 4 && !c.e.on("pidfd-leak"):
			unix.Close(int(int32(binary.NativeEndian.Uint32(m.Data))))
		}
	}
	return fds
}

// judge checks a header for the frame types that may come now, in FRM-4's
// order: flags, type (known, and expected here), nfds, length. extra adds
// the caller's checks (limits), after them.
func (c *conn) judge(h wire.Header, allowed []wire.Type, extra func(wire.Header) error) error {
	e := c.e
	checks := []func() error{
		func() error {
			if h.Flags != 0 && !e.on("ignore-flags") {
				return fail(wire.CodeMalformed, "%v frame with flags %#x", h.Type, h.Flags)
			}
			return nil
		},
		func() error {
			if h.Type < wire.TypeHello || h.Type > wire.TypeError {
				if e.on("crash-on-garbage") {
					os.Exit(1)
				}
				if e.on("skip-unknown") {
					return errSkipFrame
				}
				return fail(wire.CodeMalformed, "unknown frame type %d", uint8(h.Type))
			}
			for _, t := range allowed {
				if t == h.Type {
					return nil
				}
			}
			if e.on("skip-unexpected") && h.Type != wire.TypeError {
				return errSkipFrame
			}
			return fail(wire.CodeMalformed, "%v where %v is due", h.Type, allowed)
		},
		func() error {
			switch {
			case h.Type == wire.TypeBatch && h.NFds == 0 && !e.on("accept-nfds-0"):
				return fail(wire.CodeMalformed, "BATCH of 0 descriptors")
			case h.Type == wire.TypeBatch && h.NFds > wire.MaxFdsPerBatch && !e.on("accept-253-nfds"):
				return fail(wire.CodeMalformed, "BATCH of %d descriptors, limit %d", h.NFds, wire.MaxFdsPerBatch)
			case h.Type != wire.TypeBatch && h.NFds != 0 && !e.on("ignore-nfds"):
				return fail(wire.CodeMalformed, "%v declares %d descriptors", h.Type, h.NFds)
			}
			return nil
		},
		func() error {
			limit := uint32(wire.MaxPayload)
			if e.on("length-limit-off") {
				limit = 4 << 20
			}
			if e.on("refuse-exact-1mib") {
				limit--
			}
			if h.Length > limit {
				if e.on("toolarge-as-malformed") {
					return fail(wire.CodeMalformed, "frame of %d bytes", h.Length)
				}
				return fail(wire.CodeTooLarge, "frame of %d bytes, limit %d", h.Length, limit)
			}
			want, fixed := map[wire.Type]uint32{wire.TypeHello: 12, wire.TypeWelcome: 2, wire.TypeEnd: 4, wire.TypeAck: 4, wire.TypeReady: 0}[h.Type]
			switch {
			case fixed && h.Length != want && !e.on("length-lax"):
				return fail(wire.CodeMalformed, "%v of %d bytes, want %d", h.Type, h.Length, want)
			case h.Type == wire.TypeBatch && uint64(h.Length) < uint64(h.NFds)*wire.RecordOverhead && !e.on("batch-length-lax"):
				return fail(wire.CodeMalformed, "BATCH of %d records in %d bytes", h.NFds, h.Length)
			case h.Type == wire.TypeError && (h.Length < 4 || h.Length > 4+wire.MaxErrorText):
				return fail(wire.CodeMalformed, "ERROR of %d bytes", h.Length)
			}
			return nil
		},
	}
	if e.on("length-before-nfds") {
		checks[2], checks[3] = checks[3], checks[2]
	}
	if e.on("length-before-type") {
		checks[1], checks[3] = checks[3], checks[1]
	}
	if e.on("length-before-flags") {
		checks[0], checks[3] = checks[3], checks[0]
	}
	for _, check := range checks {
		if err := check(); err != nil {
			// An ERROR frame that breaks a rule is still an ERROR: never
			// answered (ERR-3).
			if h.Type == wire.TypeError && !errors.Is(err, errSkipFrame) && !e.on("answer-error") {
				return &codeErr{code: "OTHER", msg: "malformed ERROR frame: " + err.Error(), remote: true}
			}
			return err
		}
	}
	if extra != nil {
		return extra(h)
	}
	return nil
}

var errSkipFrame = errors.New("unknown frame skipped")

// readFrame reads the next frame, judging its header before reading its
// payload (FRM-6). io.EOF: the peer closed cleanly before its first byte.
func (c *conn) readFrame(allowed []wire.Type, extra func(wire.Header) error) (frame, error) {
	return c.readFrameWithin(c.step, allowed, extra)
}

func (c *conn) readFrameWithin(step time.Duration, allowed []wire.Type, extra func(wire.Header) error) (frame, error) {
	deadline, session := c.deadline(step)
	for {
		f, err := c.readOne(deadline, allowed, extra)
		if errors.Is(err, errSkipFrame) {
			continue
		}
		var ce *codeErr
		if session && errors.As(err, &ce) && ce.code == "TIMEOUT" {
			ce.msg = "session deadline passed"
		}
		return f, err
	}
}

func (c *conn) readOne(deadline time.Time, allowed []wire.Type, extra func(wire.Header) error) (frame, error) {
	e := c.e
	fill := func(need int) error {
		for len(c.buf) < need {
			if c.oob != nil && len(c.fds) > wire.MaxFdsPerBatch && !e.on("queue-unbounded") {
				return fail(wire.CodeMalformed, "%d descriptors queued, no frame takes them", len(c.fds))
			}
			if e.on("queue-limit-251") && len(c.fds) > 251 {
				return fail(wire.CodeMalformed, "%d descriptors queued", len(c.fds))
			}
			if e.on("per-read") {
				deadline = time.Now().Add(c.step)
			}
			n, err := c.recv(deadline)
			if err != nil {
				return err
			}
			if n == 0 {
				if len(c.buf) == 0 {
					return io.EOF
				}
				return peerClosed("end of stream inside a frame")
			}
			if e.on("single-read") && len(c.buf) < need {
				return fail(wire.CodeMalformed, "a frame did not arrive in one read")
			}
		}
		return nil
	}
	if err := fill(wire.HeaderSize); err != nil {
		return frame{}, err
	}
	h := wire.Header{Type: wire.Type(c.buf[0]), Flags: c.buf[1],
		NFds: binary.BigEndian.Uint16(c.buf[2:4]), Length: binary.BigEndian.Uint32(c.buf[4:8])}
	payloadFirst := e.on("payload-first") || c.payloadFirst
	if !payloadFirst {
		if err := c.judge(h, allowed, extra); err != nil {
			if errors.Is(err, errSkipFrame) {
				// Skipped whole: header and payload (none, for an unknown type).
				skip := wire.HeaderSize
				if h.Type >= wire.TypeHello && h.Type <= wire.TypeError {
					skip += int(min(h.Length, 4<<20))
					if ferr := fill(skip); ferr != nil {
						return frame{h: h}, ferr
					}
					if h.Type == wire.TypeBatch && len(c.fds) >= int(h.NFds) {
						closeAll(c.fds[:h.NFds])
						c.fds = c.fds[h.NFds:]
					}
				}
				c.buf = c.buf[skip:]
			} else if e.on("resync") && c.oob != nil {
				c.buf = c.buf[1:] // drop a byte and look again: a fault (ERR-1)
				return frame{h: h}, errSkipFrame
			}
			return frame{h: h}, err
		}
	}
	total := wire.HeaderSize + int(min(h.Length, 4<<20))
	if e.on("single-payload-read") && len(c.buf) < total {
		if err := fill(len(c.buf) + 1); err != nil {
			return frame{h: h}, err
		}
		if len(c.buf) < total {
			return frame{h: h}, fail(wire.CodeMalformed, "payload did not arrive in one read")
		}
	}
	if err := fill(total); err != nil {
		return frame{h: h}, err
	}
	if payloadFirst {
		if err := c.judge(h, allowed, extra); err != nil {
			return frame{h: h}, err
		}
	}
	f := frame{h: h, payload: append([]byte(nil), c.buf[wire.HeaderSize:total]...)}
	c.buf = c.buf[total:]
	if h.Type == wire.TypeBatch {
		n := int(h.NFds)
		for len(c.fds) < n && c.lenientFds {
			// Makes up the missing descriptors: a fault (RCV-2).
			nfd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				break
			}
			c.fds = append(c.fds, nfd)
		}
		if len(c.fds) < n {
			return f, fail(wire.CodeMalformed, "BATCH declares %d descriptors, %d arrived", n, len(c.fds))
		}
		if e.on("stack-queue") {
			f.fds = append([]int(nil), c.fds[len(c.fds)-n:]...)
			c.fds = c.fds[:len(c.fds)-n]
		} else {
			f.fds = append([]int(nil), c.fds[:n]...)
			c.fds = c.fds[n:]
		}
	}
	return f, nil
}

// write sends frame with fds attached to its first byte, within the step
// deadline, the whole frame one step (TRN-8).
func (c *conn) write(frame []byte, fds ...int) error {
	deadline, _ := c.deadline(c.step)
	if c.e.on("no-write-deadline") || c.e.on("hang") {
		deadline = time.Time{}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	sent := 0
	for len(frame) > 0 {
		if c.e.on("per-write-deadline") {
			deadline = time.Now().Add(c.step)
		}
		c.uc.SetWriteDeadline(deadline)
		var n int
		var werr error
		err := c.rc.Write(func(fd uintptr) bool {
			n, werr = unix.SendmsgN(int(fd), frame, oob, nil, unix.MSG_NOSIGNAL)
			return werr != unix.EAGAIN
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			c.midFrame = sent > 0
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				return timeout("writing: deadline passed")
			case errors.Is(err, unix.EPIPE), errors.Is(err, unix.ECONNRESET):
				return peerClosed("the peer closed")
			case len(oob) > 0 && sent == 0:
				return fail(wire.CodeSenderFailed, "sendmsg with %d descriptors: %v", len(fds), err)
			}
			return &codeErr{code: "OTHER", msg: "sendmsg: " + err.Error(), quiet: true}
		}
		sent += n
		frame, oob = frame[n:], nil
	}
	return nil
}

// tell sends the ERROR that a failure calls for, if any (ERR-1).
func (c *conn) tell(err error) {
	var ce *codeErr
	if !errors.As(err, &ce) {
		return
	}
	if ce.code == "TIMEOUT" && c.e.on("timeout-error") {
		c.write(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeMalformed, Message: "deadline"}))
		return
	}
	if ce.remote && c.e.on("answer-error") {
		c.write(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeMalformed, Message: "your ERROR"}))
		return
	}
	if ce.quiet || ce.remote || c.midFrame || c.e.on("no-error-frame") {
		return
	}
	code, ok := codeByName[ce.code]
	if !ok || code == wire.CodePeerClosed {
		return
	}
	c.write(wire.AppendError(nil, wire.ErrorFrame{Code: code, Message: ce.msg}))
}

var codeByName = func() map[string]wire.Code {
	m := map[string]wire.Code{}
	for c := range knownCodes {
		m[c.String()] = c
	}
	return m
}()

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
