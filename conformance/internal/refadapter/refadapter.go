// Package refadapter is the conformance adapter (spec/adapter.md) around
// the graceful library: the implementation every check of the suite must
// pass, MUST and SHOULD alike. The command adapters/reference runs it, and
// so does graceful-conformance itself when it needs a reference peer.
package refadapter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gracefulfd/graceful/conformance/internal/kit"
	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Main runs the adapter on stdin and stdout and returns the exit status.
func Main() int {
	return kit.Main(&adapter{}, kit.Options{
		Implementation: "graceful (Go reference)",
		Features:       []string{"kv"},
	})
}

type adapter struct {
	mu     sync.Mutex
	server *graceful.Server
	served chan error
}

// bytesMeta is metadata given as bytes.
type bytesMeta []byte

func (b bytesMeta) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}

// coded names the protocol error code of a library error.
type coded struct{ err error }

func (c coded) Error() string { return c.err.Error() }
func (c coded) Unwrap() error { return c.err }
func (c coded) Code() string {
	for _, m := range []struct {
		err  error
		code wire.Code
	}{
		{graceful.ErrMalformed, wire.CodeMalformed},
		{graceful.ErrUnsupportedVersion, wire.CodeUnsupportedVersion},
		{graceful.ErrUnauthorized, wire.CodeUnauthorized},
		{graceful.ErrTooLarge, wire.CodeTooLarge}, // ErrMetaTooLarge matches it too
		{graceful.ErrTruncated, wire.CodeTruncated},
		{graceful.ErrRejected, wire.CodeRejected},
		{graceful.ErrSenderFailed, wire.CodeSenderFailed},
		{graceful.ErrPeerClosed, wire.CodePeerClosed},
		{graceful.ErrBusy, wire.CodeBusy},
	} {
		if errors.Is(c.err, m.err) {
			return m.code.String()
		}
	}
	var ne net.Error
	if errors.As(c.err, &ne) && ne.Timeout() {
		return "TIMEOUT"
	}
	return "OTHER"
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return coded{err}
}

func kindOf(name string) graceful.Kind {
	for k := wire.KindRaw; k <= wire.KindPacket; k++ {
		if k.String() == name {
			return k
		}
	}
	return wire.KindRaw
}

// Serve runs a graceful.Server on the socket path.
func (a *adapter) Serve(req kit.ServeRequest) (<-chan kit.Outcome, error) {
	outcomes := make(chan kit.Outcome, 64)
	descs := req.Descriptors
	s := &graceful.Server{
		Timeout:      req.Timeout,
		ReadyTimeout: req.ReadyTimeout,
		Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			for _, d := range descs {
				var meta io.WriterTo
				switch {
				case d.KV != nil:
					meta = graceful.Meta(d.KV)
				case d.HasMeta:
					meta = bytesMeta(d.Meta)
				}
				if err := w.WriteKind(d.Fd, kindOf(d.Kind), meta); err != nil {
					w.Errorf("adapter: write fd %d: %v", d.Fd, err)
				}
			}
		}),
		Done: func(err error) {
			switch {
			case err == nil:
				outcomes <- kit.Outcome{Ready: true}
			case errors.Is(err, graceful.ErrNotReady):
				outcomes <- kit.Outcome{}
			default:
				outcomes <- kit.Outcome{Err: wrap(err)}
			}
		},
	}
	served := make(chan error, 1)
	go func() { served <- s.ListenAndServe(req.Socket) }()
	// ListenAndServe puts the socket at its path only once it listens.
	deadline := time.Now().Add(req.Timeout + time.Second)
	for {
		if st, err := os.Stat(req.Socket); err == nil && st.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case err := <-served:
			return nil, wrap(err)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("no socket at %s after %v", req.Socket, req.Timeout)
		}
	}
	a.mu.Lock()
	a.server, a.served = s, served
	a.mu.Unlock()
	return outcomes, nil
}

// Receive runs one session with graceful.Client.
func (a *adapter) Receive(req kit.ReceiveRequest) ([]kit.Received, error) {
	c := &graceful.Client{Timeout: req.Timeout, CheckKinds: true}
	conn, err := c.Dial(req.Socket)
	if err != nil {
		return nil, wrap(err)
	}
	defer conn.Close()
	var got []kit.Received
	err = c.ReceiveFrom(conn, func(fd int, meta io.Reader) error {
		r := kit.Received{Fd: fd}
		if meta != nil {
			b, err := io.ReadAll(meta)
			if err != nil {
				return err
			}
			r.Meta, r.HasMeta = b, true
			if req.KV {
				m, err := graceful.MetaFrom(bytes.NewReader(b))
				if err != nil {
					r.KVError = err.Error()
				} else {
					r.KV = m
				}
			}
		}
		got = append(got, r)
		if len(got)-1 == req.Reject {
			return errors.New("refused by the adapter")
		}
		return nil
	})
	if err == nil && req.Ready {
		err = c.Ready(conn)
	}
	return got, wrap(err)
}

// Close stops the server and waits for it.
func (a *adapter) Close() error {
	a.mu.Lock()
	s, served := a.server, a.served
	a.server = nil
	a.mu.Unlock()
	if s == nil {
		return nil
	}
	err := s.Close()
	<-served
	return err
}
