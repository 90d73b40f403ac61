package graceful

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Kind says what a descriptor is; the receiver may check it.
type Kind = wire.Kind

// Descriptor kinds.
const (
	KindRaw      = wire.KindRaw
	KindFile     = wire.KindFile
	KindListener = wire.KindListener
	KindStream   = wire.KindStream
	KindPacket   = wire.KindPacket
)

// ResponseWriter is what a Handler writes descriptors to. Writes are
// batched and sent as batches fill and when the Handler returns; so each
// descriptor must stay open until the Handler has returned. The first
// error is kept: every later Write returns it, and the session ends with an
// error instead of sending an incomplete set.
type ResponseWriter interface {
	Logger
	// Write queues fd with its metadata (nil for none), described as
	// KindRaw.
	Write(fd int, meta io.WriterTo) error
	// WriteKind queues fd with its kind and metadata.
	WriteKind(fd int, kind Kind, meta io.WriterTo) error
}

// senderConfig is what a sending session needs to know.
type senderConfig struct {
	timeout      time.Duration
	readyTimeout time.Duration // < 0: do not wait for READY
	session      time.Time     // the whole session's deadline
	log          logger
	srv          *Server // whose set the session claims, and whose Handler fills it; nil for none
	exact        bool    // read no byte past the session (see frameConn)
}

// sender implements ResponseWriter for one session.
type sender struct {
	logger
	fc      *frameConn
	recs    []wire.Record
	fds     []int
	payload int
	count   uint32
	meta    limitedBuffer
	err     error
	// keep holds the values whose descriptors were written, so that they
	// cannot be collected and closed before the session is over (TRN-10).
	keep []syscall.Conn
}

var _ ResponseWriter = (*sender)(nil)

func (s *sender) Write(fd int, meta io.WriterTo) error { return s.WriteKind(fd, KindRaw, meta) }

func (s *sender) WriteKind(fd int, kind Kind, meta io.WriterTo) error {
	if s.err != nil {
		return s.err
	}
	rec := wire.Record{Kind: kind}
	if meta != nil {
		s.meta.Reset()
		if _, err := meta.WriteTo(&s.meta); err != nil {
			return s.stop(fmt.Errorf("%w: metadata of descriptor %d: %w", ErrSenderFailed, s.count, err))
		}
		rec.HasMeta = true
		rec.Meta = append([]byte(nil), s.meta.Bytes()...)
	}
	if err := wire.CheckRecord(rec); err != nil {
		return s.stop(fmt.Errorf("%w: descriptor %d: %w", ErrSenderFailed, s.count, protocolError(err)))
	}
	size := wire.RecordOverhead + len(rec.Meta)
	if len(s.fds) == wire.MaxFdsPerBatch || s.payload+size > wire.MaxPayload {
		if err := s.flush(); err != nil {
			return err
		}
	}
	s.recs = append(s.recs, rec)
	s.fds = append(s.fds, fd)
	s.payload += size
	s.count++
	return nil
}

// errSessionOver is what a ResponseWriter kept past its session returns.
var errSessionOver = fmt.Errorf("%w: the session is over: a Handler's writes count only until it returns", ErrSenderFailed)

// stop records the first error.
func (s *sender) stop(err error) error {
	if s.err == nil {
		s.err = err
	}
	return s.err
}

// flush sends the queued batch, and whatever frames wait in fc.out before
// it, in one sendmsg. The batch is never empty: WriteKind flushes only to
// make room for another record.
func (s *sender) flush() error {
	s.fc.out = wire.AppendBatch(s.fc.out, s.recs)
	if err := s.fc.write(s.fds); err != nil {
		return s.stop(writeError(err))
	}
	s.recs, s.fds, s.payload = s.recs[:0], s.fds[:0], 0
	return nil
}

// finish sends the last batch with END, or ERROR when the set is not whole.
func (s *sender) finish() error {
	if s.err != nil {
		return s.err
	}
	if len(s.fds) > 0 {
		s.fc.out = wire.AppendBatch(s.fc.out, s.recs)
	}
	s.fc.out = wire.AppendCount(s.fc.out, wire.TypeEnd, s.count)
	if err := s.fc.write(s.fds); err != nil {
		return s.stop(writeError(err))
	}
	return nil
}

// writeError says why a write of the set failed.
func writeError(err error) error {
	if errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("%w: the receiver's socket refuses descriptors (SO_PASSRIGHTS is off): %w", ErrSenderFailed, err)
	}
	return fmt.Errorf("%w: %w", ErrSenderFailed, closedError(err))
}

// readHello reads the receiver's first frame on c, header first, into
// buffers of a HELLO's size: a frame of another type, or over its length,
// is refused from its header, before a byte of its payload is read
// (FRM-3, FRM-4). An ERROR frame (a receiver that refuses this sender) is
// read whole and returned as the peer's error. The read offers no room
// for descriptors: the kernel discards any that come (SND-9). It returns
// io.EOF alone when the peer closed before sending a byte.
func readHello(c *net.UnixConn, timeout time.Duration, deadline time.Time, bySession bool) (wire.Hello, error) {
	var buf [helloSize]byte
	return readHelloInto(c, &buf, timeout, deadline, bySession)
}

// helloSize is a HELLO frame's size, header included.
const helloSize = wire.HeaderSize + 12

func readHelloInto(c *net.UnixConn, buf *[helloSize]byte, timeout time.Duration, deadline time.Time, bySession bool) (wire.Hello, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return wire.Hello{}, err
	}
	fail := func(err error, started bool) (wire.Hello, error) {
		switch {
		case errors.Is(err, io.EOF) && !started, errors.Is(err, syscall.ECONNRESET) && !started:
			return wire.Hello{}, io.EOF
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
			return wire.Hello{}, fmt.Errorf("%w: closed inside HELLO", ErrPeerClosed)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return wire.Hello{}, timeoutError("HELLO", timeout, bySession, err)
		}
		return wire.Hello{}, err
	}
	hdr := buf[:wire.HeaderSize]
	if n, err := readFull(c, hdr); err != nil {
		return fail(err, n > 0)
	}
	h, err := wire.ParseHeaderIn(hdr, wire.TypesOf(wire.TypeHello, wire.TypeError))
	if err != nil {
		return wire.Hello{}, protocolError(err)
	}
	if h.Type == wire.TypeError {
		payload := make([]byte, h.Length) // at most 4 + wire.MaxErrorText
		if _, err := readFull(c, payload); err != nil {
			return fail(err, true)
		}
		return wire.Hello{}, peerError(payload)
	}
	payload := buf[wire.HeaderSize:] // ParseHeaderIn checked HELLO's length
	if _, err := readFull(c, payload); err != nil {
		return fail(err, true)
	}
	hello, err := wire.ParseHello(payload)
	if err != nil {
		return wire.Hello{}, protocolError(err)
	}
	return hello, nil
}

// readFull is io.ReadFull on c: the end of the stream is io.EOF when
// nothing was read, io.ErrUnexpectedEOF otherwise.
func readFull(c *net.UnixConn, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := c.Read(p[n:])
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) && n > 0 {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	return n, nil
}

// tell writes one ERROR frame saying why the session ends, when the peer
// needs to hear it, without a frameConn: before HELLO, nothing else is
// written. A failure to say it is not reported.
func tell(c *net.UnixConn, err error, timeout time.Duration) {
	if !shouldTell(err) {
		return
	}
	c.SetWriteDeadline(time.Now().Add(timeout))
	fdpass.Write(c, wire.AppendError(nil, wire.ErrorFrame{Code: codeOf(err), Message: err.Error()}), nil)
}

// offer runs a sender session on conn from the receiver's HELLO, which it
// has read (spec section 4): the version, then BUSY when another session
// holds cfg.srv's set, WELCOME, the descriptors that fill (or else
// cfg.srv's Handler) writes, END, ACK and, when asked, READY. It returns
// nil only when the receiver acknowledged the whole set (and said ready
// when waited for); claimed says whether it held cfg.srv's set, which the
// caller releases.
func offer(conn *net.UnixConn, hello wire.Hello, cfg senderConfig, fill func(net.Conn, ResponseWriter)) (claimed bool, err error) {
	if hello.MinVersion > wire.Version || hello.MaxVersion < wire.Version || hello.MinVersion > hello.MaxVersion {
		err := fmt.Errorf("%w: receiver speaks %d to %d, this sender speaks %d to %d",
			ErrUnsupportedVersion, hello.MinVersion, hello.MaxVersion, wire.Version, wire.Version)
		tell(conn, err, stepTimeout(cfg.timeout))
		return false, err
	}
	if cfg.srv != nil {
		if !cfg.srv.claim() {
			tell(conn, ErrBusy, stepTimeout(cfg.timeout))
			return false, ErrBusy
		}
		claimed = true
		if fill == nil {
			fill = cfg.srv.handle
		}
	}
	return claimed, serveSet(conn, cfg, fill)
}

// serveSet is the session from WELCOME on.
func serveSet(conn *net.UnixConn, cfg senderConfig, fill func(net.Conn, ResponseWriter)) (err error) {
	fc := newFrameConn(pollerConn{conn}, cfg.timeout, cfg.session)
	defer fc.release()
	fc.exact = cfg.exact
	defer func() {
		fc.closeQueued() // none can come (reads offer no room), but never keep any
		if err != nil && shouldTell(err) {
			fc.fail(err)
		}
	}()

	s := &sender{logger: cfg.log, fc: fc, meta: limitedBuffer{limit: wire.MaxMetaSize}, recs: fc.recs[:0], fds: fc.batchFds[:0]}
	fc.out = wire.AppendWelcome(fc.out, wire.Version)
	fill(conn, s)
	err = s.finish()
	runtime.KeepAlive(s.keep)
	// fc goes back to the pool with this session: a Handler that kept w
	// must not reach it through a later Write.
	s.stop(errSessionOver)
	fc.recs, fc.batchFds = s.recs[:0], s.fds[:0]
	s.fc, s.recs, s.fds = nil, nil, nil
	if err != nil {
		return err
	}

	f, err := fc.next(wire.TypesOf(wire.TypeAck, wire.TypeError), fc.timeout, false)
	if err != nil {
		return closedBefore("ACK", err)
	}
	if f.Header.Type == wire.TypeError {
		return peerError(f.Payload)
	}
	n, err := wire.ParseCount(f.Payload)
	if err != nil {
		return protocolError(err)
	}
	if n != s.count {
		return fmt.Errorf("%w: ACK for %d descriptors, %d sent", ErrMalformed, n, s.count)
	}
	if cfg.log.enabled(slog.LevelDebug) {
		cfg.log.Debugf("graceful: receiver acknowledged %d descriptors", s.count)
	}
	if cfg.readyTimeout < 0 {
		return nil
	}

	f, err = fc.next(wire.TypesOf(wire.TypeReady, wire.TypeError, wire.TypeHello), cfg.readyTimeout, false)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrNotReady, closedBefore("READY", err))
	case f.Header.Type == wire.TypeError:
		return fmt.Errorf("%w: %w", ErrNotReady, peerError(f.Payload))
	case f.Header.Type == wire.TypeHello:
		// The receiver holds the set and asks again: the session ends
		// not ready, and the HELLO begins the next one (RDY-2, RDY-5).
		hello, err := wire.ParseHello(f.Payload)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotReady, protocolError(err))
		}
		return &helloWhereReady{hello}
	}
	return nil
}

// closedBefore names the frame the sender waited for when the peer closed.
func closedBefore(frame string, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: closed before %s", ErrPeerClosed, frame)
	}
	return err
}
