package graceful

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
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
	// Logger receives the client's messages: a *slog.Logger, or a value
	// with some of Debugf, Infof, Errorf. Nil means no logging.
	Logger any
	// CheckKinds makes the client verify, before any callback runs, that
	// every descriptor is of the kind the sender said (spec RCV-8). It
	// costs up to three system calls per descriptor.
	CheckKinds bool
}

var defaultClient Client

// Receive dials the unix socket at addr, receives one set of descriptors,
// calls cb for each, tells the sender it is ready, and closes the
// connection. When nothing listens at addr it returns an error matching
// ErrNoServer: on a first start there is nobody to take over from.
func Receive(addr string, cb ReceiveCallback) error { return defaultClient.Receive(addr, cb) }

// ReceiveFrom receives one set of descriptors on conn, which must be a
// *net.UnixConn, and acknowledges it. It does not say ready: call Ready
// once the descriptors are in use. conn stays open.
func ReceiveFrom(conn net.Conn, cb ReceiveCallback) error {
	return defaultClient.ReceiveFrom(conn, cb)
}

// ReceiveAllFrom receives sets of descriptors on conn until the peer closes
// it between two sets. It fails with ErrPeerClosed if not even one set
// arrived.
func ReceiveAllFrom(conn net.Conn, cb ReceiveCallback) error {
	return defaultClient.ReceiveAllFrom(conn, cb)
}

// Ready tells the sender at the other end of conn that the descriptors it
// sent are in use, so that it may stop. An error means the sender did not
// hear it (it may not have waited): the descriptors received are still the
// caller's.
func Ready(conn net.Conn) error { return defaultClient.Ready(conn) }

// Dial connects to the unix socket at addr.
func Dial(addr string) (*net.UnixConn, error) { return defaultClient.Dial(addr) }

// Dial connects to the unix socket at addr, within the client's timeout.
func (c *Client) Dial(addr string) (*net.UnixConn, error) {
	d := net.Dialer{Timeout: c.timeout()}
	conn, err := d.Dial("unix", addr)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %w", ErrNoServer, err)
		}
		return nil, err
	}
	return conn.(*net.UnixConn), nil
}

// Receive is like the package's Receive, with c's settings. A sender busy
// with another receiver is asked again, with growing pauses, until the
// client's timeout.
func (c *Client) Receive(addr string, cb ReceiveCallback) error {
	deadline := time.Now().Add(c.timeout())
	for tries, pause := 0, time.Millisecond; ; tries++ {
		err := c.receiveOnce(addr, cb)
		if !errors.Is(err, ErrBusy) || time.Now().Add(pause).After(deadline) {
			return err
		}
		// Most BUSY answers come from a server still reading the previous
		// receiver's READY, and clear within microseconds; a sleep cannot
		// be shorter than a millisecond.
		if tries < 3 {
			runtime.Gosched()
			continue
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// receiveOnce runs one session on a socket of its own, waiting on the
// thread: nobody else uses the socket, and the kernel wakes a thread in
// poll directly, without a trip through Go's poller.
func (c *Client) receiveOnce(addr string, cb ReceiveCallback) error {
	b, err := fdpass.DialBlocking(addr, time.Now().Add(c.timeout()))
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %w", ErrNoServer, err)
		}
		return err
	}
	defer b.Close()
	fc := newFrameConnOn(b, c.Timeout)
	defer fc.release()
	_, err = c.session(fc, cb, true)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: closed before WELCOME", ErrPeerClosed)
	}
	return err
}

// ReceiveFrom is like the package's ReceiveFrom, with c's settings.
func (c *Client) ReceiveFrom(conn net.Conn, cb ReceiveCallback) error {
	fc, err := newFrameConn(conn, c.Timeout)
	if err != nil {
		return err
	}
	defer fc.release()
	defer fc.clearDeadlines()
	_, err = c.session(fc, cb, false)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: closed before WELCOME", ErrPeerClosed)
	}
	return err
}

// ReceiveAllFrom is like the package's ReceiveAllFrom, with c's settings.
func (c *Client) ReceiveAllFrom(conn net.Conn, cb ReceiveCallback) error {
	fc, err := newFrameConn(conn, c.Timeout)
	if err != nil {
		return err
	}
	defer fc.release()
	defer fc.clearDeadlines()
	for sets := 0; ; sets++ {
		_, err := c.session(fc, cb, false)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) && sets > 0:
			return nil
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: closed before WELCOME", ErrPeerClosed)
		default:
			return err
		}
	}
}

// Ready is like the package's Ready, with c's settings.
func (c *Client) Ready(conn net.Conn) error {
	fc, err := newFrameConn(conn, c.Timeout)
	if err != nil {
		return err
	}
	defer fc.release()
	defer fc.clearDeadlines()
	fc.out = wire.AppendReady(fc.out)
	return fc.write(nil)
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// received is one descriptor of a set, with its record.
type received struct {
	fd   int
	kind wire.Kind
	meta []byte // nil when the sender attached none
}

// session runs one receiver session (spec section 4). It returns io.EOF
// alone when the peer closed the connection instead of answering HELLO, so
// that ReceiveAllFrom can tell the end of the sets from a failure.
func (c *Client) session(fc *frameConn, cb ReceiveCallback, ready bool) (count int, err error) {
	log := logger{c.Logger}
	set := fc.set[:0]
	handed := 0
	defer func() {
		if err == nil {
			return
		}
		for _, r := range set[handed:] {
			fdpass.CloseAll([]int{r.fd})
		}
		fc.closeQueued()
		if shouldTell(err) {
			fc.fail(err)
		}
		if !errors.Is(err, io.EOF) { // io.EOF alone: the sender ended the sets
			log.Errorf("graceful: receive: %v", err)
		}
	}()

	fc.out = wire.AppendHello(fc.out, wire.Hello{MinVersion: wire.Version, MaxVersion: wire.Version})
	if err := fc.write(nil); err != nil {
		if errors.Is(err, ErrPeerClosed) {
			return 0, io.EOF
		}
		return 0, err
	}

	f, err := fc.nextControl(wire.TypeWelcome, fc.timeout)
	if err != nil {
		return 0, err
	}
	switch f.Header.Type {
	case wire.TypeWelcome:
		v, err := wire.ParseWelcome(f.Payload)
		if err != nil {
			return 0, protocolError(err)
		}
		if v != wire.Version {
			return 0, fmt.Errorf("%w: sender chose version %d, we speak %d", ErrUnsupportedVersion, v, wire.Version)
		}
	case wire.TypeError:
		return 0, peerError(f.Payload)
	default:
		return 0, fmt.Errorf("%w: %v where WELCOME was due", ErrMalformed, f.Header.Type)
	}

	arena := fc.arena[:0] // one copy of all metadata, since the decoder reuses its buffer
	defer func() { fc.set, fc.arena = set, arena }()
	for {
		f, err := fc.next(fc.timeout)
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
			set = slices.Grow(set, len(f.Fds))
			for i, fd := range f.Fds {
				r := received{fd: fd}
				if perr == nil {
					r.kind = recs[i].Kind
					if recs[i].HasMeta {
						start := len(arena)
						arena = append(arena, recs[i].Meta...)
						r.meta = arena[start:len(arena):len(arena)]
					}
				}
				set = append(set, r)
			}
			if perr != nil {
				return 0, protocolError(perr)
			}
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
			fc.out = wire.AppendCount(fc.out, wire.TypeAck, n)
			if ready {
				fc.out = wire.AppendReady(fc.out)
			}
			if err := fc.write(nil); err != nil {
				return 0, err
			}
			log.Debugf("graceful: received %d descriptors", n)
			return int(n), nil
		case wire.TypeError:
			return 0, peerError(f.Payload)
		default:
			return 0, fmt.Errorf("%w: %v in the middle of a set", ErrMalformed, f.Header.Type)
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
