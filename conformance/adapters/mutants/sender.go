package main

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/conformance/internal/kit"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// engine is an implementation of the protocol, revision 1.1, on system
// calls and the wire package, with one fault switched on.
type engine struct {
	fault string

	mu       sync.Mutex
	ln       *net.UnixListener
	path     string
	req      kit.ServeRequest
	fds      []int
	recs     []wire.Record
	busy     atomic.Bool
	outcomes chan kit.Outcome
	pending  []*conn // accepted, not past HELLO, oldest first (LIM-3)
	conns    map[*conn]bool
	closed   bool
	wg       sync.WaitGroup
	// dialled: the connection is one the engine made (feature dial).
	dialled bool
}

func (e *engine) on(fault string) bool { return e.fault == fault }

// DefaultMaxPending bounds the connections that have not sent HELLO.
const defaultMaxPending = 64

// prepare checks the set and builds its records (SND-5).
func (e *engine) prepare(req kit.ServeRequest) error {
	e.req = req
	for _, d := range req.Descriptors {
		meta, has := d.Meta, d.HasMeta
		if d.KV != nil {
			meta, has = encodeKV(e, d.KV), true
		}
		limit := wire.MaxMetaSize
		if e.on("meta-limit-off") {
			limit--
		}
		if len(meta) > limit {
			if !e.on("truncate-meta") {
				return fail(wire.CodeTooLarge, "metadata of %d bytes, limit %d", len(meta), limit)
			}
			meta = meta[:limit]
		}
		kind := kindOf(d.Kind)
		if e.on("kind-lie") {
			kind = wire.KindFile
		}
		e.recs = append(e.recs, wire.Record{Kind: kind, HasMeta: has, Meta: meta})
		e.fds = append(e.fds, d.Fd)
	}
	switch {
	case e.on("wrong-fd") && len(e.fds) > 0:
		nfd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		e.fds[0] = nfd
	case e.on("reopen"):
		for i, fd := range e.fds {
			if nfd, err := unix.Open("/proc/self/fd/"+itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
				e.fds[i] = nfd
			}
		}
	case e.on("sorted-fds"):
		sortByFd(e.fds, e.recs)
	case e.on("dup-first") && len(e.fds) > 1:
		e.fds[1] = e.fds[0]
	case e.on("meta-swap") && len(e.recs) > 1:
		e.recs[0].Meta, e.recs[1].Meta = e.recs[1].Meta, e.recs[0].Meta
		e.recs[0].HasMeta, e.recs[1].HasMeta = e.recs[1].HasMeta, e.recs[0].HasMeta
	case e.on("close-first") && len(e.fds) > 0:
		unix.Close(e.fds[0])
	}
	return nil
}

// Serve listens on the socket path and serves every connection.
func (e *engine) Serve(req kit.ServeRequest) (<-chan kit.Outcome, error) {
	if err := e.prepare(req); err != nil {
		return nil, err
	}
	ln, err := e.listen(req.Socket)
	if err != nil {
		return nil, err
	}
	e.ln, e.path = ln, req.Socket
	e.outcomes = make(chan kit.Outcome, 256)
	e.conns = map[*conn]bool{}
	go e.accept()
	return e.outcomes, nil
}

func (e *engine) accept() {
	for {
		uc, err := e.ln.AcceptUnix()
		if err != nil {
			if ne, ok := err.(net.Error); ok && !errors.Is(err, net.ErrClosed) && ne.Timeout() {
				continue
			}
			return
		}
		c, err := newConn(e, uc, e.req.Timeout, false)
		if err != nil {
			uc.Close()
			continue
		}
		if !e.track(c) {
			c.close()
			return
		}
		e.wg.Add(1)
		run := func() {
			defer e.wg.Done()
			ready, err := e.serveConn(c)
			if (err != nil && e.on("leak-conn")) || (err == nil && e.on("sender-leak-on-success")) {
				if fd, derr := unix.Dup(connFd(c)); derr == nil {
					_ = fd // kept open on purpose
				}
			}
			c.close()
			e.untrack(c)
			e.outcomes <- kit.Outcome{Ready: ready, Err: err}
		}
		if e.on("thread-per-conn") {
			// A thread of its own, taken before the next accept.
			locked := make(chan struct{})
			go func() {
				lockThread()
				close(locked)
				run()
			}()
			<-locked
			continue
		}
		go run()
	}
}

func (e *engine) track(c *conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.conns[c] = true
	e.pending = append(e.pending, c)
	limit := e.req.MaxPending
	if limit <= 0 {
		limit = defaultMaxPending
	}
	if e.on("unbounded-pending") {
		limit = 1 << 30
	}
	for len(e.pending) > limit {
		oldest := e.pending[0]
		e.pending = e.pending[1:]
		oldest.uc.CloseRead() // wakes its reader: the session ends
		oldest.uc.CloseWrite()
	}
	return true
}

// started removes c from the pending connections: its HELLO arrived.
func (e *engine) started(c *conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, p := range e.pending {
		if p == c {
			e.pending = append(e.pending[:i], e.pending[i+1:]...)
			return
		}
	}
}

func (e *engine) untrack(c *conn) {
	e.started(c)
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
}

// serveConn serves the sessions of one connection; ready reports how its
// last session ended.
func (e *engine) serveConn(c *conn) (ready bool, err error) {
	defer func() {
		if err != nil {
			c.tell(err)
		}
	}()
	if e.on("busy-before-header") && e.busy.Load() {
		return false, fail(wire.CodeBusy, "another receiver is taking the set")
	}
	if !e.on("auth-after-hello") && !e.on("judge-before-auth") {
		if err := e.checkPeer(c, e.req.Authorize); err != nil {
			return false, e.refusal(c, err)
		}
	}
	if e.on("sender-no-hello-deadline") {
		c.step = 0
	}
	// The session deadline runs from the moment HELLO is awaited (LIM-1).
	c.sessionEnd = e.sessionEnd()
	hello, err := c.readFrame([]wire.Type{wire.TypeHello}, nil)
	c.step = e.req.Timeout
	if errors.Is(err, io.EOF) {
		return false, peerClosed("closed before HELLO")
	}
	var ce *codeErr
	if e.on("sender-eof-hello-continue") && errors.As(err, &ce) && ce.code == wire.CodePeerClosed.String() {
		// A cut HELLO taken for a whole one.
		hello, err = frame{h: wire.Header{Type: wire.TypeHello, Length: 12},
			payload: wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1})[wire.HeaderSize:]}, nil
	}
	if err != nil {
		return false, err
	}
	e.started(c)
	if e.on("judge-before-auth") {
		if h, perr := wire.ParseHello(hello.payload); perr != nil {
			return false, fail(wire.CodeMalformed, "HELLO: %v", perr)
		} else if !acceptable(e, h) {
			return false, e.unsupported(h)
		}
	}
	if e.on("auth-after-hello") || e.on("judge-before-auth") {
		if err := e.checkPeer(c, e.req.Authorize); err != nil {
			return false, e.refusal(c, err)
		}
	}
	for first := true; ; first = false {
		outcome, next, err := e.session(c, hello, first)
		if err != nil {
			return false, err
		}
		if next != nil {
			hello = *next
			continue
		}
		if !outcome {
			return false, nil // acked, not ready: the connection ends
		}
		// READY: another session may follow; the idle wait is a step.
		step := e.req.Timeout
		if e.on("no-idle-deadline") {
			step = time.Hour
		}
		c.sessionEnd = time.Time{}
		f, err := c.readFrameWithin(step, []wire.Type{wire.TypeHello}, nil)
		switch {
		case errors.Is(err, io.EOF):
			return true, nil
		case err != nil:
			var ce *codeErr
			if errors.As(err, &ce) && ce.code == "TIMEOUT" && !e.on("idle-is-failure") {
				return true, nil // an idle connection closed: not a failure
			}
			return false, err
		}
		hello = f
	}
}

// refusal is the error of a refused peer; the auth-welcome-first mutant
// writes WELCOME before it.
func (e *engine) refusal(c *conn, err error) error {
	var aw *authWelcome
	if errors.As(err, &aw) {
		c.write(wire.AppendWelcome(nil, 1))
		return aw.codeErr
	}
	return err
}

// session runs one session from its HELLO. It returns whether READY came,
// and the HELLO of a next session sent where READY was awaited.
func (e *engine) session(c *conn, hello frame, first bool) (ready bool, next *frame, err error) {
	if !first {
		c.sessionEnd = e.sessionEnd()
	}
	if !first && e.on("second-hello-malformed") {
		return false, nil, fail(wire.CodeMalformed, "one session per connection")
	}
	payload := hello.payload
	if e.on("length-lax") && len(payload) > 12 {
		payload = payload[:12] // the rest ignored: a fault (FRM-4)
	}
	h, perr := wire.ParseHello(payload)
	badMagic := perr != nil && !e.on("ignore-magic")
	badVersions := hello.h.Length == 12 && !acceptable(e, h)
	// The order of refusals (NEG-6): magic, versions, then BUSY.
	claimed := false
	claim := func() bool {
		if e.on("no-busy") {
			return true
		}
		claimed = e.busy.CompareAndSwap(false, true)
		return claimed
	}
	refuse := func(err error) (bool, *frame, error) {
		if claimed {
			e.busy.Store(false)
		}
		return false, nil, err
	}
	if e.on("busy-first") && !claim() {
		return refuse(fail(wire.CodeBusy, "another receiver is taking the set"))
	}
	switch {
	case badVersions && e.on("magic-after-version"):
		return refuse(e.unsupported(h))
	case badMagic:
		return refuse(fail(wire.CodeMalformed, "HELLO magic %q", hello.payload[:min(8, len(hello.payload))]))
	case badVersions:
		return refuse(e.unsupported(h))
	case !claimed && !claim():
		return refuse(fail(wire.CodeBusy, "another receiver is taking the set"))
	}
	release := func() {
		if !e.on("no-busy") && !e.on("busy-sticky") {
			e.busy.Store(false)
		}
	}
	defer func() {
		if e.on("busy-sticky") && err == nil {
			e.busy.Store(false)
		}
	}()
	defer func() {
		if !e.on("busy-until-ack") {
			release()
		}
	}()

	version := uint16(1)
	switch {
	case e.on("welcome-highest"):
		version = h.MaxVersion
	case e.on("welcome-two"):
		version = 2
	}
	welcome := wire.AppendWelcome(nil, version)
	if e.on("welcome-wide") {
		// The version as a 4-byte field: a layout of its own (NEG-5).
		welcome = append(wire.AppendHeader(nil, wire.Header{Type: wire.TypeWelcome, Length: 4}), 0, 0, 0, 1)
	}
	if e.on("welcome-le") {
		welcome[8], welcome[9] = welcome[9], welcome[8]
	}
	if e.on("sender-flags") {
		welcome[1] = 1
	}
	if err := c.write(welcome); err != nil {
		return false, nil, err
	}
	if err := e.sendSet(c); err != nil {
		return false, nil, err
	}
	count := len(e.recs)
	if e.on("end-count-off") {
		count++
	}
	if !first && e.on("second-session-cumulative") {
		count *= 2
	}
	end := wire.AppendCount(nil, wire.TypeEnd, uint32(count))
	if e.on("little-endian") {
		end = toLittleEndian(end)
	}
	if err := c.write(end); err != nil {
		return false, nil, err
	}

	f, err := c.readFrame([]wire.Type{wire.TypeAck, wire.TypeError}, nil)
	if e.on("no-ack-check") {
		return false, nil, nil
	}
	switch {
	case errors.Is(err, io.EOF):
		return false, nil, peerClosed("closed before ACK")
	case err != nil:
		return false, nil, err
	case f.h.Type == wire.TypeError:
		if ef, perr := wire.ParseError(f.payload); perr == nil && !knownCodes[ef.Code] && e.on("unknown-code-ok") {
			f.payload = wire.AppendCount(nil, wire.TypeAck, uint32(len(e.recs)))[wire.HeaderSize:]
			break
		}
		return false, nil, e.remoteErr(f.payload)
	}
	n, _ := wire.ParseCount(f.payload)
	switch {
	case int(n) == len(e.recs), e.on("ack-count-lax"):
	case e.on("ack-fewer-ok") && int(n) < len(e.recs):
	case e.on("ack-wrong-no-error"):
		return false, nil, peerClosed("ACK for %d descriptors, %d sent", n, len(e.recs))
	default:
		return false, nil, fail(wire.CodeMalformed, "ACK for %d descriptors, %d sent", n, len(e.recs))
	}
	if e.on("busy-until-ack") {
		release()
	}
	if e.on("ready-on-ack") {
		return true, nil, nil
	}

	wait := e.req.ReadyTimeout
	if e.on("no-ready-deadline") {
		wait, c.sessionEnd = time.Hour, time.Time{}
	}
	if e.on("ready-deadline-long") {
		wait, c.sessionEnd = time.Minute, time.Time{}
	}
	f, err = c.readFrameWithin(wait, []wire.Type{wire.TypeReady, wire.TypeHello, wire.TypeError}, nil)
	switch {
	case errors.Is(err, io.EOF):
		if e.on("ready-eof-failure") {
			return false, nil, peerClosed("closed before READY")
		}
		return false, nil, nil
	case err != nil:
		var ce *codeErr
		if errors.As(err, &ce) && ce.code == "TIMEOUT" {
			return false, nil, nil // RDY-3: received, not ready
		}
		if e.on("ready-any-frame-ok") {
			return true, nil, nil
		}
		// Any other frame: received, not ready; MALFORMED, and the end.
		c.tell(err)
		return false, nil, nil
	case f.h.Type == wire.TypeReady:
		return true, nil, nil
	case f.h.Type == wire.TypeHello:
		return false, &f, nil
	}
	// An ERROR where READY was awaited: received, not ready.
	if e.on("ready-frame-answer") {
		c.write(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeMalformed, Message: "ERROR where READY was due"}))
		return false, nil, e.remoteErr(f.payload)
	}
	return false, nil, nil
}

// sessionEnd is the deadline of a session starting now (LIM-1); zero for
// none.
func (e *engine) sessionEnd() time.Time {
	if e.noSessionDeadline() {
		return time.Time{}
	}
	session := e.req.SessionTimeout
	if session <= 0 {
		session = 3 * e.req.Timeout
	}
	return time.Now().Add(session)
}

// noSessionDeadline: the faults of an implementation without a session
// deadline (revision 1.0 had none), which the step deadlines must catch.
func (e *engine) noSessionDeadline() bool {
	return e.on("no-session-deadline") || e.on("hang") || e.on("per-read") || e.on("per-write-deadline")
}

func acceptable(e *engine, h wire.Hello) bool {
	switch {
	case e.on("version-lax"):
		return true
	case e.on("min-gt-max-ok") && h.MinVersion > h.MaxVersion:
		return true
	case e.on("reject-wide-range") && h.MaxVersion > 1:
		return false
	case e.on("reject-min-zero") && h.MinVersion == 0:
		return false
	}
	return h.MinVersion <= 1 && h.MaxVersion >= 1 && h.MinVersion <= h.MaxVersion
}

func (e *engine) unsupported(h wire.Hello) error {
	if e.on("unsupported-as-malformed") {
		return fail(wire.CodeMalformed, "versions %d..%d", h.MinVersion, h.MaxVersion)
	}
	return fail(wire.CodeUnsupportedVersion, "versions %d..%d; this sender speaks 1..1", h.MinVersion, h.MaxVersion)
}

// sendSet writes the BATCH frames.
func (e *engine) sendSet(c *conn) error {
	per := wire.MaxFdsPerBatch
	switch {
	case e.on("batch-253"):
		per = 253
	case e.on("batch-504"):
		per = 504
	}
	limit := wire.MaxPayload
	if e.on("payload-limit-plus") {
		limit += 100
	}
	order := make([]int, len(e.recs))
	for i := range order {
		order[i] = i
		if e.on("reorder-send") {
			order[i] = len(order) - 1 - i
		}
	}
	for start := 0; start < len(order); {
		end, size := start, 0
		for end < len(order) && end-start < per && size+wire.RecordOverhead+len(e.recs[order[end]].Meta) <= limit {
			size += wire.RecordOverhead + len(e.recs[order[end]].Meta)
			end++
		}
		var recs []wire.Record
		var fds []int
		for _, i := range order[start:end] {
			recs = append(recs, e.recs[i])
			fds = append(fds, e.fds[i])
		}
		if e.on("blocking") || e.on("nonblock-set") {
			for _, d := range fds {
				if fl, err := unix.FcntlInt(uintptr(d), unix.F_GETFL, 0); err == nil {
					if e.on("blocking") {
						unix.FcntlInt(uintptr(d), unix.F_SETFL, fl&^unix.O_NONBLOCK)
					} else {
						unix.FcntlInt(uintptr(d), unix.F_SETFL, fl|unix.O_NONBLOCK)
					}
				}
			}
		}
		if e.on("shutdown-sent") {
			for _, d := range fds {
				unix.Shutdown(d, unix.SHUT_RD)
			}
		}
		frame := wire.AppendBatch(nil, recs)
		if e.on("little-endian") {
			frame = toLittleEndian(frame)
		}
		var err error
		switch {
		case e.on("late-fds"):
			if err = c.write(frame[:len(frame)-1]); err == nil {
				err = c.write(frame[len(frame)-1:], fds...)
			}
		case e.on("fds-on-second-byte"):
			if err = c.write(frame[:1]); err == nil {
				err = c.write(frame[1:], fds...)
			}
		default:
			err = c.write(frame, fds...)
		}
		if err != nil {
			var ce *codeErr
			if e.on("end-anyway") && errors.As(err, &ce) && ce.code == wire.CodeSenderFailed.String() {
				start = end
				continue
			}
			if e.on("no-error-on-fail") {
				return peerClosed("%v", err)
			}
			return err
		}
		start = end
	}
	return nil
}

// Send connects to a listening receiver and serves that connection
// (feature dial).
func (e *engine) Send(req kit.ServeRequest) kit.Outcome {
	if err := e.prepare(req); err != nil {
		return kit.Outcome{Err: err}
	}
	d := net.Dialer{Timeout: req.Timeout}
	nc, err := d.Dial("unix", req.Socket)
	if err != nil {
		return kit.Outcome{Err: &codeErr{code: "OTHER", msg: err.Error()}}
	}
	c, err := newConn(e, nc.(*net.UnixConn), req.Timeout, false)
	if err != nil {
		nc.Close()
		return kit.Outcome{Err: err}
	}
	defer c.close()
	e.dialled = true
	ready, err := e.serveConn(c)
	return kit.Outcome{Ready: ready, Err: err}
}

// Close stops serving: the listener, then every connection.
func (e *engine) Close() error {
	e.mu.Lock()
	e.closed = true
	ln := e.ln
	e.ln = nil
	for c := range e.conns {
		c.uc.CloseRead()
		c.uc.CloseWrite()
	}
	e.mu.Unlock()
	if ln != nil {
		ln.Close()
		if e.path != "" && e.path[0] != '@' {
			os.Remove(e.path)
		}
	}
	return nil
}
