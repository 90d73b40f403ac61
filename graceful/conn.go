package graceful

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Defaults for the zero values of Client and Server fields.
const (
	// DefaultTimeout bounds each blocking step: a dial, a read, a write.
	DefaultTimeout = 10 * time.Second
	// DefaultReadyTimeout bounds a Server's wait for READY after ACK, and
	// so how long a receiver that never says READY keeps others out.
	DefaultReadyTimeout = 10 * time.Second
	// DefaultMaxPending is how many connections a Server holds before
	// their HELLO.
	DefaultMaxPending = 64
	// DefaultMaxFds is the most descriptors a Client takes in one set.
	DefaultMaxFds = 16384
	// DefaultMaxMetaBytes is the most metadata bytes, all descriptors
	// together, a Client takes in one set.
	DefaultMaxMetaBytes = 16 << 20
)

// sessionTimeout is the default bound of a whole session: three steps.
func sessionTimeout(session, step time.Duration) time.Duration {
	if session > 0 {
		return session
	}
	return 3 * stepTimeout(step)
}

func stepTimeout(t time.Duration) time.Duration {
	if t > 0 {
		return t
	}
	return DefaultTimeout
}

// readSize is the least free space offered to each read: room for a full
// batch of descriptor records without metadata, with WELCOME and END.
const readSize = 2 << 10

// transport moves a frameConn's bytes and descriptors: through Go's poller
// (pollerConn), or waiting on the thread on a socket only the Client uses
// (fdpass.Blocking), which skips the poller's park and wake-up on every
// wait. A read given no oob buffer receives no descriptors: the kernel
// discards any that came.
type transport interface {
	Read(p, oob []byte, fds []int, deadline time.Time) (int, []int, error)
	Write(data, oob []byte, deadline time.Time) error
}

// pollerConn is a connection served through Go's poller; when it is the
// caller's, its deadlines are cleared when the session ends.
type pollerConn struct{ c *net.UnixConn }

func (p pollerConn) Read(b, oob []byte, fds []int, deadline time.Time) (int, []int, error) {
	if err := p.c.SetReadDeadline(deadline); err != nil {
		return 0, fds, err
	}
	if oob == nil {
		n, err := p.c.Read(b)
		return n, fds, err
	}
	return fdpass.Read(p.c, b, oob, fds)
}

func (p pollerConn) Write(data, oob []byte, deadline time.Time) error {
	if err := p.c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	return fdpass.Write(p.c, data, oob)
}

// frameConn reads and writes frames on one connection, with a deadline on
// every step and, when set, on the whole session. Descriptors that arrive
// are queued in dec until a BATCH frame takes them; whoever stops early
// must close dec.TakeFds(). Only a receiver's reads take descriptors.
type frameConn struct {
	t       transport
	timeout time.Duration
	session time.Time // the session's deadline; zero for none
	dec     wire.Decoder
	takeFds bool   // offer room for descriptors (the receiver)
	oob     []byte // kept for takeFds
	fds     []int  // scratch for each read's descriptors
	out     []byte
	rights  []byte // scratch for each write's control message
	// exact makes every read stop at the end of the frame being read, for a
	// session that leaves the connection to its caller afterwards: bytes
	// of what follows (the peer's next HELLO) must stay in the socket.
	exact bool
	// A receiver's set so far and its limits, which judge applies to each
	// BATCH header.
	gotFds, gotMeta, maxFds, maxMeta int

	// Scratch for the session, kept with fc in framePool: a sender's batch
	// (recs, batchFds), a receiver's set and its metadata (recs, set, arena).
	recs     []wire.Record
	batchFds []int
	set      []received
	arena    []byte
}

func unixConn(c net.Conn) (*net.UnixConn, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrNotUnixConn, c)
	}
	return uc, nil
}

// newFrameConn returns a frameConn from the pool; whoever gets one calls
// release when done with it.
func newFrameConn(t transport, timeout time.Duration, session time.Time) *frameConn {
	fc := framePool.Get().(*frameConn)
	fc.t, fc.timeout, fc.session = t, stepTimeout(timeout), session
	return fc
}

// framePool keeps frameConns and their buffers between sessions: a
// hand-off is a handful of frames, and allocating some 3 KiB of buffers
// for each was most of a session's garbage.
var framePool = sync.Pool{New: func() any { return new(frameConn) }}

// maxPooled is the largest read buffer kept for another session; one that
// grew for a large set goes to the garbage collector.
const maxPooled = 64 << 10

// release closes descriptors left in the queue and returns fc to the pool.
// Nothing read through fc may be used afterwards.
func (fc *frameConn) release() {
	fdpass.CloseAll(fc.dec.Reset())
	if !fc.poolable() {
		return
	}
	clear(fc.recs[:cap(fc.recs)]) // they point into buffers: let those go
	*fc = frameConn{
		dec: fc.dec, oob: fc.oob, fds: fc.fds[:0], out: fc.out[:0], rights: fc.rights[:0],
		recs: fc.recs[:0], batchFds: fc.batchFds[:0], set: fc.set[:0], arena: fc.arena[:0],
	}
	framePool.Put(fc)
}

// poolable reports whether fc's buffers are small enough to be kept for
// another session. The decoder's must be empty.
func (fc *frameConn) poolable() bool {
	return cap(fc.out) <= maxPooled && cap(fc.dec.Space(0)) <= maxPooled && cap(fc.arena) <= maxPooled
}

// deadline is the deadline of a step of timeout: the session's, when it
// comes first.
func (fc *frameConn) deadline(timeout time.Duration) (d time.Time, bySession bool) {
	d = time.Now().Add(timeout)
	if !fc.session.IsZero() && fc.session.Before(d) {
		return fc.session, true
	}
	return d, false
}

// next returns the next frame, which must be of a type in allowed. With
// judge, a BATCH header is held against the set's limits as soon as its 8
// bytes are in, before its payload is read (FRM-4). next returns io.EOF
// alone when the peer closed before sending a single byte of the frame.
func (fc *frameConn) next(allowed wire.TypeSet, timeout time.Duration, judge bool) (f wire.Frame, err error) {
	deadline, bySession := fc.deadline(timeout) // for the whole frame (TRN-8)
	fc.dec.Expect(allowed)
	var oob []byte
	if fc.takeFds {
		if fc.oob == nil {
			fc.oob = make([]byte, fdpass.OOBSize)
		}
		oob = fc.oob
	}
	for {
		if judge {
			h, ok, err := fc.dec.Peek()
			if err != nil {
				return f, protocolError(err)
			}
			if ok {
				if err := fc.judge(h); err != nil {
					return f, err
				}
				judge = false
			}
		}
		f, ok, err := fc.dec.Next()
		if err != nil {
			return f, protocolError(err)
		}
		if ok {
			return f, nil
		}
		buf := fc.dec.Space(readSize)
		if fc.exact {
			n := max(fc.dec.Need(), minFrameSize(allowed)-fc.dec.Buffered())
			buf = buf[:min(n, len(buf))]
		}
		n, fds, err := fc.t.Read(buf, oob, fc.fds[:0], deadline)
		fc.dec.Commit(n)
		fc.dec.AddFds(fds)
		fc.fds = fds
		if err != nil {
			err = readError(err, fc.dec.Buffered() == 0 && fc.dec.Queued() == 0)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = timeoutError(waitedFor(allowed), timeout, bySession, err)
			}
			return f, err
		}
	}
}

// judge refuses a BATCH that would take the set over its limits.
func (fc *frameConn) judge(h wire.Header) error {
	if h.Type != wire.TypeBatch {
		return nil
	}
	if n := fc.gotFds + int(h.NFds); n > fc.maxFds {
		return fmt.Errorf("%w: set of at least %d descriptors, limit %d", ErrTooLarge, n, fc.maxFds)
	}
	// ParseHeader checked that the records' fixed part fits the length.
	if n := fc.gotMeta + int(h.Length) - wire.RecordOverhead*int(h.NFds); n > fc.maxMeta {
		return fmt.Errorf("%w: set of at least %d metadata bytes, limit %d", ErrTooLarge, n, fc.maxMeta)
	}
	return nil
}

// minFrameSize is the size of the shortest frame of a type in allowed, so
// that an exact read can ask for that much at once.
func minFrameSize(allowed wire.TypeSet) int {
	least := wire.HeaderSize + 4 // ERROR's code and length
	for t := wire.TypeHello; t <= wire.TypeError; t++ {
		if allowed.Has(t) && t != wire.TypeError {
			size, fixed := wire.FixedSize(t)
			if !fixed {
				size = wire.HeaderSize + wire.RecordOverhead // a BATCH of one record
			}
			least = min(least, size)
		}
	}
	return least
}

// waitedFor names the frames a step waited for, for a timeout's text:
// ERROR may always come, and goes unsaid.
func waitedFor(allowed wire.TypeSet) string {
	var names []string
	for t := wire.TypeHello; t < wire.TypeError; t++ {
		if allowed.Has(t) {
			names = append(names, t.String())
		}
	}
	return strings.Join(names, " or ")
}

// timeoutError says what was waited for, and which bound ran out: the
// step's timeout or the whole session's.
func timeoutError(what string, timeout time.Duration, bySession bool, err error) error {
	if bySession {
		return fmt.Errorf("no %s before the session deadline: %w", what, err)
	}
	return fmt.Errorf("no %s within %v: %w", what, timeout, err)
}

// readError names why a read failed. A close at a frame boundary is io.EOF;
// the caller decides whether that boundary was allowed. A reset there is a
// close too: the peer closed with our next HELLO unread.
func readError(err error, atBoundary bool) error {
	closed := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	switch {
	case closed && atBoundary:
		return io.EOF
	case closed:
		return fmt.Errorf("%w: %w", ErrPeerClosed, err)
	}
	return protocolError(err)
}

// peerGone reports whether a write failed because the peer closed.
func peerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// closedError makes a write that failed because the peer closed match
// ErrPeerClosed.
func closedError(err error) error {
	if peerGone(err) {
		return fmt.Errorf("%w: %w", ErrPeerClosed, err)
	}
	return err
}

// write sends fc.out (one or more frames) with fds on its first byte,
// within a step (and the session's deadline), then empties it. Its error
// is the transport's.
func (fc *frameConn) write(fds []int) error {
	d, _ := fc.deadline(fc.timeout)
	return fc.writeBy(fds, d)
}

func (fc *frameConn) writeBy(fds []int, deadline time.Time) error {
	fc.rights = fdpass.AppendRights(fc.rights[:0], fds)
	err := fc.t.Write(fc.out, fc.rights, deadline)
	fc.out = fc.out[:0]
	return err
}

// fail tells the peer why we stop, if it still listens. The original error
// is what matters; a failure to say it is not reported.
func (fc *frameConn) fail(err error) {
	fc.out = wire.AppendError(fc.out[:0], wire.ErrorFrame{Code: codeOf(err), Message: err.Error()})
	fc.writeBy(nil, time.Now().Add(fc.timeout))
}

// closeQueued closes descriptors received but never assigned to a frame.
func (fc *frameConn) closeQueued() { fdpass.CloseAll(fc.dec.TakeFds()) }

// clearDeadlines leaves the caller's connection without our deadlines.
func (fc *frameConn) clearDeadlines() {
	if p, ok := fc.t.(pollerConn); ok {
		p.c.SetDeadline(time.Time{})
	}
}
