package graceful

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Errors of this package. The exported functions and Server.Done return
// them inside an *OpError, with detail: test them with errors.Is.
var (
	// ErrNoServer means nothing listens at the address: usually the first
	// start of a service, not a failure.
	ErrNoServer = errors.New("nothing is listening at the address")
	// ErrPeerClosed means the peer closed the connection before the set
	// was complete.
	ErrPeerClosed = errors.New("peer closed before the set was complete")
	// ErrUnauthorized means the peer may not take the descriptors, or, to a
	// receiver, that the sender may not give them: the set was not offered.
	ErrUnauthorized = errors.New("peer not authorised")
	// ErrTooLarge means a length, or a set, is over its limit: a frame over
	// wire.MaxPayload bytes, a set over Client.MaxFds descriptors or
	// Client.MaxMetaBytes bytes of metadata. Nothing is truncated.
	ErrTooLarge = errors.New("too large")
	// ErrMetaTooLarge means the metadata of one descriptor is over
	// wire.MaxMetaSize bytes. It is never truncated. It matches ErrTooLarge.
	ErrMetaTooLarge = fmt.Errorf("metadata %w", ErrTooLarge)
	// ErrUnsupportedVersion means the two sides share no protocol version.
	ErrUnsupportedVersion = errors.New("protocol version not supported")
	// ErrTruncated means the kernel truncated the control data (MSG_CTRUNC):
	// descriptors were lost in transit, for example at the open-file limit.
	ErrTruncated = errors.New("truncated control data")
	// ErrMalformed means the peer broke the protocol.
	ErrMalformed = errors.New("malformed message")
	// ErrRejected means the receiver's callback refused a descriptor.
	ErrRejected = errors.New("receiver rejected the set")
	// ErrSenderFailed means the sender could not send its whole set.
	ErrSenderFailed = errors.New("sender failed")
	// ErrBusy means the sender is handing its set to another receiver: the
	// set was not offered. Receive asks again by itself.
	ErrBusy = errors.New("sender busy with another receiver")
	// ErrNotReady means the receiver took the set but closed the connection
	// without saying it was ready, or did not say it in time.
	ErrNotReady = errors.New("receiver did not signal ready")
	// ErrUnconfirmed means every descriptor of the set reached the
	// callback, but the sender may not have heard the acknowledgement (or
	// READY): the set is the caller's, and the sender may still think it
	// holds it. It never matches ErrPeerClosed.
	ErrUnconfirmed = errors.New("set delivered, its acknowledgement unconfirmed")
	// ErrAddrInUse means Listen found something at the address that is not
	// a stale socket (a file, a directory, a socket a server answers on),
	// and left it alone.
	ErrAddrInUse = errors.New("address in use")
	// ErrNotUnixConn means a connection given to this package is not a
	// *net.UnixConn.
	ErrNotUnixConn = errors.New("not a unix connection")
	// ErrNotFiler means a value to send does not expose its descriptor
	// (it does not implement syscall.Conn).
	ErrNotFiler = errors.New("value has no descriptor")
	// ErrServerClosed is returned, alone, by Serve and ListenAndServe after
	// Close.
	ErrServerClosed = errors.New("graceful: server closed")
)

// OpError is the error of an exported function of this package, and of a
// session given to Server.Done: the operation, the socket address it ran
// on, and the cause, which matches the package's sentinel errors with
// errors.Is (and os.ErrDeadlineExceeded when a deadline passed).
type OpError struct {
	// Op is the operation: "receive", "dial", "listen", "serve", "send",
	// "ready", "read metadata".
	Op string
	// Addr is the unix socket address (a path or "@name"), or the peer's
	// address on a connection of the caller's; empty when there is none.
	Addr string
	// Err is the cause.
	Err error
}

func (e *OpError) Error() string {
	s := "graceful: " + e.Op
	if e.Addr != "" {
		s += " " + e.Addr
	}
	return s + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// Timeout reports whether a deadline passed, as net.Error's Timeout does.
func (e *OpError) Timeout() bool { return errors.Is(e.Err, os.ErrDeadlineExceeded) }

// Temporary is false: nothing in this package is retried by waiting.
// It is here for net.Error.
func (e *OpError) Temporary() bool { return false }

// opError wraps err once, at the exported edge; nil stays nil.
func opError(op, addr string, err error) error {
	if err == nil {
		return nil
	}
	var oe *OpError
	if errors.As(err, &oe) {
		return err
	}
	return &OpError{Op: op, Addr: addr, Err: err}
}

var codeErrors = map[wire.Code]error{
	wire.CodeMalformed:          ErrMalformed,
	wire.CodeUnsupportedVersion: ErrUnsupportedVersion,
	wire.CodeUnauthorized:       ErrUnauthorized,
	wire.CodeTooLarge:           ErrTooLarge,
	wire.CodeTruncated:          ErrTruncated,
	wire.CodeRejected:           ErrRejected,
	wire.CodeSenderFailed:       ErrSenderFailed,
	wire.CodePeerClosed:         ErrPeerClosed,
	wire.CodeBusy:               ErrBusy,
}

// remoteError is an ERROR frame the peer sent. It matches the sentinel of
// its code; it is never answered with an ERROR of our own.
type remoteError struct {
	sentinel error
	code     wire.Code
	message  string
}

func (e remoteError) Error() string {
	return fmt.Sprintf("%v: peer sent %v: %q", e.sentinel, e.code, e.message)
}
func (e remoteError) Unwrap() error { return e.sentinel }

// peerError turns an ERROR frame's payload into an error matching its
// sentinel.
func peerError(payload []byte) error {
	e, err := wire.ParseError(payload)
	if err != nil {
		return protocolError(err)
	}
	sentinel, ok := codeErrors[e.Code]
	if !ok {
		sentinel = ErrMalformed
	}
	return remoteError{sentinel: sentinel, code: e.Code, message: e.Message}
}

// shouldTell reports whether the peer needs an ERROR frame to learn that
// the session failed. Not when it closed; not when it said so itself, even
// in an ERROR frame that breaks a rule (an ERROR is never answered, ERR-3);
// not when a deadline passed (no code names a deadline: the connection is
// just closed, TRN-8); and not when it began another session where READY
// was due (RDY-2).
func shouldTell(err error) bool {
	var (
		remote remoteError
		quiet  unanswered
		again  *helloWhereReady
	)
	return !errors.Is(err, io.EOF) && !errors.Is(err, ErrPeerClosed) && !errors.Is(err, os.ErrDeadlineExceeded) &&
		!errors.As(err, &remote) && !errors.As(err, &quiet) && !errors.As(err, &again)
}

// unanswered is a failure caused by a broken ERROR frame of the peer's:
// the peer is not answered (ERR-3).
type unanswered struct{ error }

func (u unanswered) Unwrap() error { return u.error }

// helloWhereReady ends a session whose receiver said HELLO where READY was
// due: it holds the set, is not ready, and begins another session on the
// connection with hello (RDY-2, RDY-5).
type helloWhereReady struct{ hello wire.Hello }

func (*helloWhereReady) Error() string {
	return ErrNotReady.Error() + ": HELLO where READY was due: the receiver begins another session"
}
func (*helloWhereReady) Unwrap() error { return ErrNotReady }

// codeOf picks the ERROR code that tells the peer why we stop.
func codeOf(err error) wire.Code {
	switch {
	case errors.Is(err, ErrSenderFailed):
		return wire.CodeSenderFailed
	case errors.Is(err, ErrRejected):
		return wire.CodeRejected
	case errors.Is(err, ErrTruncated):
		return wire.CodeTruncated
	case errors.Is(err, ErrTooLarge):
		return wire.CodeTooLarge
	case errors.Is(err, ErrUnsupportedVersion):
		return wire.CodeUnsupportedVersion
	case errors.Is(err, ErrUnauthorized):
		return wire.CodeUnauthorized
	case errors.Is(err, ErrBusy):
		return wire.CodeBusy
	}
	return wire.CodeMalformed
}

// protocolError maps the codec's and syscall layer's errors to ours: the
// package's sentinel in front of the codec's detail, which names the rule
// or the limit broken.
func protocolError(err error) error {
	if errors.Is(err, wire.ErrBadErrorFrame) {
		return unanswered{mapWireError(err)}
	}
	return mapWireError(err)
}

func mapWireError(err error) error {
	for _, m := range []struct{ from, to error }{
		{wire.ErrTooLarge, ErrTooLarge},
		{wire.ErrMalformed, ErrMalformed},
		{fdpass.ErrTruncated, ErrTruncated},
	} {
		if errors.Is(err, m.from) {
			detail := strings.TrimPrefix(strings.TrimPrefix(err.Error(), m.from.Error()), ": ")
			if detail == "" {
				return m.to
			}
			return fmt.Errorf("%w: %s", m.to, detail)
		}
	}
	return err
}
