package graceful

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// ReceiveCallback is called once for each received descriptor, in the
// order the sender wrote them, after the whole set has arrived and been
// verified.
//
// meta is nil when the sender attached no metadata; it is valid only until
// the callback returns. The callback owns fd from the moment it is called,
// even when it returns an error: wrap it (FdListener, FdConn, os.NewFile) or
// close it. An error stops the session: the descriptors not yet given to the
// callback are closed, the sender is told the set was rejected, and the
// error is returned wrapped in ErrRejected.
type ReceiveCallback func(fd int, meta io.Reader) error

// Client receives descriptors. Its zero value is ready to use.
type Client struct {
	// Timeout bounds each blocking step: the dial, each read and write.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// SessionTimeout bounds a whole session, from the dial to the set's
	// last frame, whatever each step takes; for Receive, it also bounds
	// the asking again of a BUSY sender. Zero means three times Timeout
	// (30 s by default).
	SessionTimeout time.Duration
	// Authorize decides whether the sender may give descriptors to this
	// process, before a byte is written to it: a process of another user
	// at the address (or at an abstract name anyone can bind) would
	// otherwise hand over descriptors of its choice. Nil means the sender
	// must run as this process's effective user. A sender whose uid or gid
	// is the kernel's overflow id (usually 65534) is refused before
	// Authorize is asked. A refused sender is told UNAUTHORIZED, and the
	// error matches ErrUnauthorized.
	Authorize func(PeerCred) error
	// MaxFds bounds the descriptors of one set; a sender that declares
	// more is told TOO_LARGE, everything received is closed, and the
	// error matches ErrTooLarge. Zero means DefaultMaxFds (16384).
	MaxFds int
	// MaxMetaBytes bounds the metadata bytes of one set, all descriptors
	// together, as MaxFds does. Zero means DefaultMaxMetaBytes (16 MiB).
	MaxMetaBytes int
	// Logger receives the client's messages; nil means no logging (see
	// NewSlogLogger). A failure is logged once, at error level; a BUSY
	// answer that Receive asks again after, at debug level.
	Logger *slog.Logger
	// CheckKinds makes the client verify, before any callback runs, that
	// every descriptor is of the kind the sender said (spec RCV-8). It
	// costs up to three system calls per descriptor.
	CheckKinds bool
}

var defaultClient Client

// Receive dials the unix socket at addr (a path, or "@name" for an
// abstract address on Linux), checks that the sender runs as this
// process's user, receives one set of descriptors, calls cb for each,
// tells the sender it is ready, and closes the connection. A sender busy
// with another receiver is asked again until the session timeout; the
// error then matches ErrBusy, and also os.ErrDeadlineExceeded when the
// last question got no answer in time.
//
// When nothing listens at addr it returns an error matching ErrNoServer:
// on a first start there is nobody to take over from. Once every
// descriptor of the set has been given to cb, it returns nil or an error
// matching ErrUnconfirmed (the sender may not have heard the
// acknowledgement): either way the set is the caller's, and the caller
// should serve with it. Any other error means no descriptor reached cb.
//
// In a process a supervisor started as a spare (SpareEnv), Receive first
// waits for its turn (AwaitTurn).
func Receive(addr string, cb ReceiveCallback) error { return defaultClient.Receive(addr, cb) }

// ReceiveFrom receives one set of descriptors on conn, which must be a
// *net.UnixConn, and acknowledges it. It does not say ready: call Ready
// once the descriptors are in use. conn stays open. As with Receive, once
// every descriptor has been given to cb, the error is nil or matches
// ErrUnconfirmed.
func ReceiveFrom(conn net.Conn, cb ReceiveCallback) error {
	return defaultClient.ReceiveFrom(conn, cb)
}

// ReceiveAllFrom receives sets of descriptors on conn until the peer closes
// it between two sets. It fails with ErrPeerClosed if not even one set
// arrived. The last set's error is as ReceiveFrom's.
func ReceiveAllFrom(conn net.Conn, cb ReceiveCallback) error {
	return defaultClient.ReceiveAllFrom(conn, cb)
}

// Ready tells the sender at the other end of conn that the descriptors it
// sent are in use, so that it may stop. An error (matching ErrUnconfirmed
// when the write failed) means the sender did not hear it (it may not
// have waited): the descriptors received are still the caller's.
func Ready(conn net.Conn) error { return defaultClient.Ready(conn) }

// Dial connects to the unix socket at addr.
func Dial(addr string) (*net.UnixConn, error) { return defaultClient.Dial(addr) }

// Dial connects to the unix socket at addr (a path, or "@name"), within
// the client's timeout. It does not check the peer: ReceiveFrom and the
// Send functions do. In a process started as a spare, the first Dial
// waits for its turn first, as Receive does (see AwaitTurn).
func (c *Client) Dial(addr string) (*net.UnixConn, error) {
	if err := AwaitTurn(); err != nil {
		return nil, opError("dial", addr, err)
	}
	conn, err := c.dial(addr)
	return conn, opError("dial", addr, err)
}

func (c *Client) dial(addr string) (*net.UnixConn, error) {
	path, release, err := dialAddr(addr)
	if err != nil {
		return nil, noServer(err)
	}
	defer release()
	d := net.Dialer{Timeout: stepTimeout(c.Timeout)}
	conn, err := d.Dial("unix", path)
	if err != nil {
		return nil, noServer(err)
	}
	return conn.(*net.UnixConn), nil
}

// noServer makes a failed dial that found nobody match ErrNoServer.
func noServer(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %w", ErrNoServer, err)
	}
	return err
}

// Receive is like the package's Receive, with c's settings.
func (c *Client) Receive(addr string, cb ReceiveCallback) error {
	log := logger{c.Logger}
	if err := AwaitTurn(); err != nil {
		return c.result("receive", addr, 0, err)
	}
	deadline := time.Now().Add(sessionTimeout(c.SessionTimeout, c.Timeout))
	// tries is also how many BUSY answers came before this attempt.
	for tries, pause := 0, time.Millisecond; ; tries++ {
		n, err := c.receiveOnce(addr, cb, deadline)
		if tries > 0 && errors.As(err, new(unansweredError)) {
			// A sender that said BUSY and did not answer again in time is
			// still busy as far as the caller can tell; no time is left
			// to ask again, or it does not answer at all.
			err = fmt.Errorf("%w: BUSY answers: %d, then none to the next HELLO: %w", ErrBusy, tries, err)
			return c.result("receive", addr, n, err)
		}
		if !errors.Is(err, ErrBusy) || time.Now().Add(pause).After(deadline) {
			return c.result("receive", addr, n, err)
		}
		if log.enabled(slog.LevelDebug) {
			log.log(slog.LevelDebug, "graceful: sender busy; asking again", "addr", addr, "err", err)
		}
		// Most BUSY answers come from a server still reading the previous
		// receiver's READY, and clear within microseconds; a sleep cannot
		// be shorter than a millisecond.
		if tries < 3 {
			runtime.Gosched()
			continue
		}
		time.Sleep(pause)
		if !time.Now().Before(deadline) { // the sleep overshot: no time left to ask
			return c.result("receive", addr, n, err)
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// unansweredError is a HELLO that got no answer in time.
type unansweredError struct{ error }

func (e unansweredError) Unwrap() error { return e.error }

// result logs the outcome of an exported call once, and wraps its error.
func (c *Client) result(op, addr string, n int, err error) error {
	log := logger{c.Logger}
	if err != nil {
		err = opError(op, addr, err)
		log.log(slog.LevelError, "graceful: "+op+" failed", "err", err)
		return err
	}
	if log.enabled(slog.LevelDebug) {
		log.log(slog.LevelDebug, "graceful: received the set", "addr", addr, "descriptors", n)
	}
	return nil
}

// receiveOnce runs one session on a socket of its own, waiting on the
// thread: nobody else uses the socket, and the kernel wakes a thread in
// poll directly, without a trip through Go's poller.
func (c *Client) receiveOnce(addr string, cb ReceiveCallback, deadline time.Time) (int, error) {
	path, release, err := dialAddr(addr)
	if err != nil {
		return 0, noServer(err)
	}
	b, err := fdpass.DialBlocking(path, earliest(time.Now().Add(stepTimeout(c.Timeout)), deadline))
	release()
	if err != nil {
		return 0, noServer(err)
	}
	defer b.Close()
	fc := newFrameConn(b, c.Timeout, deadline)
	defer fc.release()
	cred, err := b.PeerCred()
	return c.sessionWith(fc, PeerCred(cred), err, cb, true)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// ReceiveFrom is like the package's ReceiveFrom, with c's settings.
func (c *Client) ReceiveFrom(conn net.Conn, cb ReceiveCallback) error {
	uc, err := unixConn(conn)
	if err != nil {
		return c.result("receive", "", 0, err)
	}
	fc := c.frameConnOn(uc)
	defer fc.release()
	defer fc.clearDeadlines()
	cred, err := peerCred(uc)
	n, err := c.sessionWith(fc, cred, err, cb, false)
	return c.result("receive", connAddr(uc), n, err)
}

// ReceiveAllFrom is like the package's ReceiveAllFrom, with c's settings.
func (c *Client) ReceiveAllFrom(conn net.Conn, cb ReceiveCallback) error {
	uc, err := unixConn(conn)
	if err != nil {
		return c.result("receive", "", 0, err)
	}
	fc := c.frameConnOn(uc)
	defer fc.release()
	defer fc.clearDeadlines()
	cred, err := peerCred(uc)
	total := 0
	for sets := 0; ; sets++ {
		fc.session = time.Now().Add(sessionTimeout(c.SessionTimeout, c.Timeout))
		n, serr := c.sessionWith(fc, cred, err, cb, false)
		total += n
		switch {
		case serr == nil:
		case errors.Is(serr, ErrPeerClosed) && errors.Is(serr, io.EOF) && sets > 0:
			return c.result("receive", connAddr(uc), total, nil)
		default:
			return c.result("receive", connAddr(uc), total, serr)
		}
	}
}

func (c *Client) frameConnOn(uc *net.UnixConn) *frameConn {
	fc := newFrameConn(pollerConn{uc}, c.Timeout, time.Now().Add(sessionTimeout(c.SessionTimeout, c.Timeout)))
	return fc
}

// Ready is like the package's Ready, with c's settings.
func (c *Client) Ready(conn net.Conn) error {
	uc, err := unixConn(conn)
	if err != nil {
		return opError("ready", "", err)
	}
	fc := newFrameConn(pollerConn{uc}, c.Timeout, time.Time{})
	defer fc.release()
	defer fc.clearDeadlines()
	fc.out = wire.AppendReady(fc.out)
	if err := fc.write(nil); err != nil {
		return opError("ready", connAddr(uc), fmt.Errorf("%w: %w", ErrUnconfirmed, err))
	}
	return nil
}

// received is one descriptor of a set, with its record.
type received struct {
	fd   int
	kind wire.Kind
	meta []byte // nil when the sender attached none
}

// sessionWith checks the sender (cred, or why it is unknown) before a byte
// is written, then runs a session. A sender closing before it said
// anything is ErrPeerClosed, with io.EOF in the chain (ReceiveAllFrom's
// end of the sets).
func (c *Client) sessionWith(fc *frameConn, cred PeerCred, credErr error, cb ReceiveCallback, ready bool) (int, error) {
	if credErr != nil {
		credErr = fmt.Errorf("%w: cannot identify the sender: %w", ErrUnauthorized, credErr)
	} else {
		credErr = authorize(cred, c.Authorize)
	}
	if credErr != nil {
		fc.fail(credErr)
		return 0, credErr
	}
	fc.takeFds = true
	fc.maxFds, fc.maxMeta = c.MaxFds, c.MaxMetaBytes
	if fc.maxFds <= 0 {
		fc.maxFds = DefaultMaxFds
	}
	if fc.maxMeta <= 0 {
		fc.maxMeta = DefaultMaxMetaBytes
	}
	n, err := c.session(fc, cb, ready)
	if errors.Is(err, io.EOF) && !errors.Is(err, ErrPeerClosed) {
		err = fmt.Errorf("%w: closed before WELCOME: %w", ErrPeerClosed, io.EOF)
	}
	return n, err
}

// session runs one receiver session (spec section 4). It returns io.EOF
// alone when the peer closed the connection instead of answering HELLO, so
// that ReceiveAllFrom can tell the end of the sets from a failure.
func (c *Client) session(fc *frameConn, cb ReceiveCallback, ready bool) (count int, err error) {
	set := fc.set[:0]
	handed := 0
	delivered := false
	fc.gotFds, fc.gotMeta = 0, 0
	defer func() {
		if err == nil {
			return
		}
		for _, r := range set[handed:] {
			fdpass.CloseAll([]int{r.fd})
		}
		fc.closeQueued()
		if !delivered && shouldTell(err) {
			fc.fail(err)
		}
	}()

	fc.out = wire.AppendHello(fc.out, wire.Hello{MinVersion: wire.Version, MaxVersion: wire.Version})
	if err := fc.write(nil); err != nil {
		if !peerGone(err) {
			return 0, err
		}
		// The sender closed, and may have said why first (UNAUTHORIZED,
		// BUSY): what it wrote is still there to read (AUTH-9).
		f, rerr := fc.next(wire.TypesOf(wire.TypeWelcome, wire.TypeError), fc.timeout, false)
		switch {
		case rerr == nil && f.Header.Type == wire.TypeError:
			return 0, peerError(f.Payload)
		case errors.Is(rerr, io.EOF):
			return 0, io.EOF
		}
		return 0, fmt.Errorf("%w: closed before WELCOME: %w", ErrPeerClosed, err)
	}

	f, err := fc.next(wire.TypesOf(wire.TypeWelcome, wire.TypeError), fc.timeout, false)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, unansweredError{err}
	}
	if err != nil {
		return 0, err
	}
	if f.Header.Type == wire.TypeError {
		return 0, peerError(f.Payload)
	}
	v, err := wire.ParseWelcome(f.Payload)
	if err != nil {
		return 0, protocolError(err)
	}
	if v != wire.Version {
		return 0, fmt.Errorf("%w: sender chose version %d, we speak %d", ErrUnsupportedVersion, v, wire.Version)
	}

	arena := fc.arena[:0] // one copy of all metadata, since the decoder reuses its buffer
	defer func() { fc.set, fc.arena = set, arena }()
	for {
		f, err := fc.next(wire.TypesOf(wire.TypeBatch, wire.TypeEnd, wire.TypeError), fc.timeout, true)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: %d descriptors in, no END", ErrPeerClosed, len(set))
			}
			return 0, err
		}
		switch f.Header.Type {
		case wire.TypeBatch:
			recs, perr := wire.ParseBatchInto(fc.recs, f.Payload, len(f.Fds))
			fc.recs = recs
			// Each entry is written in place: a received built aside and
			// appended cost more than the rest of the loop together.
			first := len(set)
			set = slices.Grow(set, len(f.Fds))[:first+len(f.Fds)]
			for i, fd := range f.Fds {
				r := &set[first+i]
				r.fd, r.kind, r.meta = fd, wire.KindRaw, nil
				if perr == nil {
					r.kind = recs[i].Kind
					if recs[i].HasMeta {
						start := len(arena)
						arena = append(arena, recs[i].Meta...)
						r.meta = arena[start:len(arena):len(arena)]
					}
				}
			}
			if perr != nil {
				return 0, protocolError(perr)
			}
			fc.gotFds, fc.gotMeta = len(set), len(arena)
		case wire.TypeEnd:
			n, err := wire.ParseCount(f.Payload)
			if err != nil {
				return 0, protocolError(err)
			}
			if int64(n) != int64(len(set)) || fc.dec.Queued() != 0 {
				return 0, fmt.Errorf("%w: END says %d descriptors, %d arrived and %d are unclaimed",
					ErrMalformed, n, len(set), fc.dec.Queued())
			}
			if err := c.deliver(set, cb, &handed); err != nil {
				return 0, err
			}
			delivered = true
			fc.out = wire.AppendCount(fc.out, wire.TypeAck, n)
			if ready {
				fc.out = wire.AppendReady(fc.out)
			}
			// The set is ours now: the session's deadline no longer
			// applies, only the step's.
			if err := fc.writeBy(nil, time.Now().Add(fc.timeout)); err != nil {
				return int(n), fmt.Errorf("%w: %w", ErrUnconfirmed, err)
			}
			return int(n), nil
		case wire.TypeError:
			return 0, peerError(f.Payload)
		}
	}
}

// deliver checks kinds if asked, then hands each descriptor to cb. handed
// counts the descriptors cb now owns.
func (c *Client) deliver(set []received, cb ReceiveCallback, handed *int) error {
	if c.CheckKinds {
		for i, r := range set {
			if r.kind == wire.KindRaw {
				continue
			}
			got, err := fdpass.Kind(r.fd)
			if err != nil {
				return err
			}
			if got != r.kind {
				return fmt.Errorf("%w: descriptor %d is a %v, the sender said %v", ErrMalformed, i, got, r.kind)
			}
		}
	}
	var meta bytes.Reader
	for i, r := range set {
		*handed = i + 1
		var m io.Reader
		if r.meta != nil {
			meta.Reset(r.meta)
			m = &meta
		}
		if err := cb(r.fd, m); err != nil {
			return fmt.Errorf("%w: descriptor %d: %w", ErrRejected, i, err)
		}
	}
	return nil
}
