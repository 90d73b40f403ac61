package graceful

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

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
	authorize    func(uid int) error
	log          logger
	busy         func() bool // reports whether another session holds the set
	exact        bool        // read no byte past the session (see frameConn)
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
	keep []any
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
// it, in one sendmsg.
func (s *sender) flush() error {
	if len(s.fds) > 0 {
		s.fc.out = wire.AppendBatch(s.fc.out, s.recs)
	}
	if err := s.fc.write(s.fds); err != nil {
		return s.stop(fmt.Errorf("%w: %w", ErrSenderFailed, err))
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
		return s.stop(fmt.Errorf("%w: %w", ErrSenderFailed, err))
	}
	return nil
}

// serveSession runs one sender session on conn (spec section 4): HELLO,
// checks, WELCOME, the descriptors that fill writes, END, ACK and, when
// asked, READY. It returns nil only when the receiver acknowledged the whole
// set (and said ready when waited for).
func serveSession(conn net.Conn, t transport, cfg senderConfig, fill func(net.Conn, ResponseWriter)) (err error) {
	fc := newFrameConnOn(t, cfg.timeout)
	defer fc.release()
	fc.exact = cfg.exact
	defer fc.clearDeadlines()
	defer func() {
		fc.closeQueued() // a receiver sends no descriptors: close any it did
		if err != nil && shouldTell(err) {
			fc.fail(err)
		}
	}()

	f, err := fc.nextControl(wire.TypeHello, fc.timeout)
	if err != nil {
		return stepError("HELLO", fc.timeout, err)
	}
	if f.Header.Type != wire.TypeHello {
		return fmt.Errorf("%w: %v where HELLO was due", ErrMalformed, f.Header.Type)
	}
	hello, err := wire.ParseHello(f.Payload)
	if err != nil {
		return protocolError(err)
	}
	if err := authorize(t, cfg.authorize); err != nil {
		return err
	}
	if hello.MinVersion > wire.Version || hello.MaxVersion < wire.Version || hello.MinVersion > hello.MaxVersion {
		return fmt.Errorf("%w: receiver speaks %d to %d, this sender speaks %d to %d",
			ErrUnsupportedVersion, hello.MinVersion, hello.MaxVersion, wire.Version, wire.Version)
	}
	if cfg.busy != nil && cfg.busy() {
		return fmt.Errorf("%w", ErrBusy)
	}

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

	f, err = fc.nextControl(wire.TypeAck, fc.timeout)
	if err != nil {
		return stepError("ACK", fc.timeout, err)
	}
	switch f.Header.Type {
	case wire.TypeAck:
		n, err := wire.ParseCount(f.Payload)
		if err != nil {
			return protocolError(err)
		}
		if n != s.count {
			return fmt.Errorf("%w: ACK for %d descriptors, %d sent", ErrMalformed, n, s.count)
		}
	case wire.TypeError:
		return peerError(f.Payload)
	default:
		return fmt.Errorf("%w: %v where ACK was due", ErrMalformed, f.Header.Type)
	}
	cfg.log.Debugf("graceful: receiver acknowledged %d descriptors", s.count)
	if cfg.readyTimeout < 0 {
		return nil
	}

	f, err = fc.nextControl(wire.TypeReady, cfg.readyTimeout)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, stepError("READY", cfg.readyTimeout, err))
	}
	if f.Header.Type != wire.TypeReady {
		return fmt.Errorf("%w: %v where READY was due", ErrNotReady, f.Header.Type)
	}
	return nil
}

// stepError says which frame the sender was waiting for when the peer went
// away or the deadline passed.
func stepError(frame string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, io.EOF) && frame == "HELLO":
		// io.EOF stays in the chain: a close between sessions is how a
		// receiver says it wants no more (ServeConn).
		return fmt.Errorf("%w: closed before HELLO: %w", ErrPeerClosed, io.EOF)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: closed before %s", ErrPeerClosed, frame)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no %s within %v: %w", frame, timeout, err)
	}
	return err
}

// authorize applies the user's policy, or by default requires the peer to
// run as our effective user (AUTH-1).
func authorize(t transport, policy func(uid int) error) error {
	uid, err := t.PeerUID()
	if err != nil {
		return fmt.Errorf("%w: cannot identify the peer: %w", ErrUnauthorized, err)
	}
	if policy != nil {
		if err := policy(uid); err != nil {
			return fmt.Errorf("%w: uid %d: %w", ErrUnauthorized, uid, err)
		}
		return nil
	}
	if me := os.Geteuid(); uid != me {
		return fmt.Errorf("%w: peer runs as uid %d, this process as %d", ErrUnauthorized, uid, me)
	}
	return nil
}
