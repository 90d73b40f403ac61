package graceful

import (
	"errors"
	"fmt"
	"io"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Errors returned by this package, always wrapped with detail: test them
// with errors.Is.
var (
	// ErrNoServer means nothing listens at the address: usually the first
	// start of a service, not a failure.
	ErrNoServer = errors.New("graceful: nothing is listening at the address")
	// ErrPeerClosed means the peer closed the connection before the set
	// was complete.
	ErrPeerClosed = errors.New("graceful: peer closed before the set was complete")
	// ErrUnauthorized means the peer may not take the descriptors.
	ErrUnauthorized = errors.New("graceful: peer not authorised")
	// ErrMetaTooLarge means metadata is over wire.MaxMetaSize bytes. It is
	// never truncated.
	ErrMetaTooLarge = errors.New("graceful: metadata too large")
	// ErrUnsupportedVersion means the two sides share no protocol version.
	ErrUnsupportedVersion = errors.New("graceful: protocol version not supported")
	// ErrTruncated means the kernel truncated the control data (MSG_CTRUNC):
	// descriptors were lost in transit, for example at the open-file limit.
	ErrTruncated = errors.New("graceful: truncated control data")
	// ErrMalformed means the peer broke the protocol.
	ErrMalformed = errors.New("graceful: malformed message")
	// ErrRejected means the receiver's callback refused a descriptor.
	ErrRejected = errors.New("graceful: receiver rejected the set")
	// ErrSenderFailed means the sender could not send its whole set.
	ErrSenderFailed = errors.New("graceful: sender failed")
	// ErrBusy means the sender is handing its set to another receiver.
	ErrBusy = errors.New("graceful: sender busy with another receiver")
	// ErrNotReady means the receiver took the set but closed the connection
	// without saying it was ready.
	ErrNotReady = errors.New("graceful: receiver did not signal ready")
	// ErrNotUnixConn means a connection given to this package is not a
	// *net.UnixConn.
	ErrNotUnixConn = errors.New("graceful: not a unix connection")
	// ErrNotFiler means a value to send does not expose its descriptor
	// (it does not implement syscall.Conn).
	ErrNotFiler = errors.New("graceful: value has no descriptor")
	// ErrServerClosed is returned by Serve after Close.
	ErrServerClosed = errors.New("graceful: server closed")
)

var codeErrors = map[wire.Code]error{
	wire.CodeMalformed:          ErrMalformed,
	wire.CodeUnsupportedVersion: ErrUnsupportedVersion,
	wire.CodeUnauthorized:       ErrUnauthorized,
	wire.CodeTooLarge:           ErrMetaTooLarge,
	wire.CodeTruncated:          ErrTruncated,
	wire.CodeRejected:           ErrRejected,
	wire.CodeSenderFailed:       ErrSenderFailed,
	wire.CodePeerClosed:         ErrPeerClosed,
	wire.CodeBusy:               ErrBusy,
}

// remoteError is an ERROR frame the peer sent. It matches the sentinel of
// its code; it is never answered with an ERROR of our own.
type remoteError struct{ err error }

func (e remoteError) Error() string { return e.err.Error() }
func (e remoteError) Unwrap() error { return e.err }

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
	return remoteError{fmt.Errorf("%w: peer sent %v: %q", sentinel, e.Code, e.Message)}
}

// shouldTell reports whether the peer needs an ERROR frame to learn that
// the session failed: not when it closed, and not when it said so itself.
func shouldTell(err error) bool {
	var remote remoteError
	return !errors.Is(err, io.EOF) && !errors.Is(err, ErrPeerClosed) && !errors.As(err, &remote)
}

// codeOf picks the ERROR code that tells the peer why we stop.
func codeOf(err error) wire.Code {
	switch {
	case errors.Is(err, ErrSenderFailed):
		return wire.CodeSenderFailed
	case errors.Is(err, ErrRejected):
		return wire.CodeRejected
	case errors.Is(err, ErrTruncated):
		return wire.CodeTruncated
	case errors.Is(err, ErrMetaTooLarge), errors.Is(err, wire.ErrTooLarge):
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

// protocolError maps the codec's and syscall layer's errors to ours.
func protocolError(err error) error {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrMetaTooLarge, err)
	case errors.Is(err, wire.ErrMalformed):
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	case errors.Is(err, fdpass.ErrTruncated):
		return fmt.Errorf("%w: %w", ErrTruncated, err)
	}
	return err
}
