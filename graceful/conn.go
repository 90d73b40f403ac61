package graceful

import (
	"errors"
	"fmt"
	"io"
	"net"
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
	// DefaultReadyTimeout bounds a Server's wait for READY after ACK.
	DefaultReadyTimeout = 30 * time.Second
)

// readSize is the least free space offered to each read: room for a full
// batch of descriptor records without metadata, with WELCOME and END.
const readSize = 2 << 10

// transport moves a frameConn's bytes and descriptors: through Go's poller
// on a connection the caller owns, or waiting on the thread on a socket
// only the library uses (fdpass.Blocking), which skips the poller's park
// and wake-up on every wait.
type transport interface {
	Read(p, oob []byte, fds []int, deadline time.Time) (int, []int, error)
	Write(data, oob []byte, deadline time.Time) error
	PeerUID() (int, error)
}

// pollerConn is a caller's connection; its deadlines are cleared when the
// session ends.
type pollerConn struct{ c *net.UnixConn }

func (p pollerConn) Read(b, oob []byte, fds []int, deadline time.Time) (int, []int, error) {
	if err := p.c.SetReadDeadline(deadline); err != nil {
		return 0, fds, err
	}
	return fdpass.Read(p.c, b, oob, fds)
}

func (p pollerConn) Write(data, oob []byte, deadline time.Time) error {
	if err := p.c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	return fdpass.Write(p.c, data, oob)
}

func (p pollerConn) PeerUID() (int, error) { return fdpass.PeerUID(p.c) }

// frameConn reads and writes frames on one connection, with a deadline on
// every step. Descriptors that arrive are queued in dec until a BATCH frame
// takes them; whoever stops early must close dec.TakeFds().
type frameConn struct {
	t       transport
	timeout time.Duration
	dec     wire.Decoder
	oob     []byte
	fds     []int // scratch for each read's descriptors
	out     []byte
	rights  []byte // scratch for each write's control message
	// exact makes every read stop at the end of the frame being read, for a
	// session that leaves the connection to its caller afterwards: bytes
	// of what follows (the peer's next HELLO) must stay in the socket.
	exact bool
	// expect is the frame type the session waits for: an exact read asks
	// for all of it at once when its size is fixed.
	expect wire.Type

	// Scratch for the session, kept with fc in framePool: a sender's batch
	// (recs, batchFds), a receiver's set and its metadata (recs, set, arena).
	recs     []wire.Record
	batchFds []int
	set      []received
	arena    []byte
}

func newFrameConn(c net.Conn, timeout time.Duration) (*frameConn, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrNotUnixConn, c)
	}
	return newFrameConnOn(pollerConn{uc}, timeout), nil
}

// newFrameConnOn returns a frameConn from the pool; whoever gets one calls
// release when done with it.
func newFrameConnOn(t transport, timeout time.Duration) *frameConn {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	fc := framePool.Get().(*frameConn)
	fc.t, fc.timeout = t, timeout
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
	if cap(fc.out) > maxPooled || cap(fc.dec.Space(0)) > maxPooled || cap(fc.arena) > maxPooled {
		return
	}
	clear(fc.recs[:cap(fc.recs)]) // they point into buffers: let those go
	*fc = frameConn{
		dec: fc.dec, oob: fc.oob, fds: fc.fds[:0], out: fc.out[:0], rights: fc.rights[:0],
		recs: fc.recs[:0], batchFds: fc.batchFds[:0], set: fc.set[:0], arena: fc.arena[:0],
	}
	framePool.Put(fc)
}

// next returns the next frame. It returns io.EOF alone when the peer
// closed before sending a single byte of it.
func (fc *frameConn) next(timeout time.Duration) (f wire.Frame, err error) {
	deadline := time.Now().Add(timeout) // for the whole frame (TRN-8)
	if fc.oob == nil {
		fc.oob = make([]byte, fdpass.OOBSize)
	}
	for {
		f, ok, err := fc.dec.Next()
		if err != nil {
			return f, protocolError(err)
		}
		if ok {
			return f, nil
		}
		buf := fc.dec.Space(readSize)
		if fc.exact {
			n := fc.dec.Need()
			if size, ok := wire.FixedSize(fc.expect); ok {
				n = max(n, size-fc.dec.Buffered())
			}
			buf = buf[:min(n, len(buf))]
		}
		n, fds, err := fc.t.Read(buf, fc.oob, fc.fds[:0], deadline)
		fc.dec.Commit(n)
		fc.dec.AddFds(fds)
		fc.fds = fds
		if err != nil {
			return f, readError(err, fc.dec.Buffered() == 0 && fc.dec.Queued() == 0)
		}
	}
}

// nextControl is next for frames that carry no descriptors: descriptors a
// misbehaving peer attached to any frame are closed at once.
func (fc *frameConn) nextControl(expect wire.Type, timeout time.Duration) (wire.Frame, error) {
	fc.expect = expect
	f, err := fc.next(timeout)
	fdpass.CloseAll(f.Fds)
	f.Fds = nil
	return f, err
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

// write sends fc.out (one or more frames) with fds on its first byte, then
// empties it.
func (fc *frameConn) write(fds []int) error {
	fc.rights = fdpass.AppendRights(fc.rights[:0], fds)
	err := fc.t.Write(fc.out, fc.rights, time.Now().Add(fc.timeout))
	fc.out = fc.out[:0]
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: %w", ErrPeerClosed, err)
	}
	return err
}

// fail tells the peer why we stop, if it still listens. The original error
// is what matters; a failure to say it is not reported.
func (fc *frameConn) fail(err error) {
	fc.out = wire.AppendError(fc.out[:0], wire.ErrorFrame{Code: codeOf(err), Message: err.Error()})
	fc.write(nil)
}

// closeQueued closes descriptors received but never assigned to a frame.
func (fc *frameConn) closeQueued() { fdpass.CloseAll(fc.dec.TakeFds()) }

// clearDeadlines leaves the caller's connection without our deadlines.
func (fc *frameConn) clearDeadlines() {
	if p, ok := fc.t.(pollerConn); ok {
		p.c.SetDeadline(time.Time{})
	}
}
