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
	"slices"
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
		Features:       []string{"kv", "sessions", "dial", "authorize", "limits", "abstract"},
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
		code string
	}{
		{graceful.ErrUnconfirmed, "UNCONFIRMED"},
		{graceful.ErrMalformed, wire.CodeMalformed.String()},
		{graceful.ErrUnsupportedVersion, wire.CodeUnsupportedVersion.String()},
		{graceful.ErrUnauthorized, wire.CodeUnauthorized.String()},
		{graceful.ErrTooLarge, wire.CodeTooLarge.String()}, // ErrMetaTooLarge matches it too
		{graceful.ErrTruncated, wire.CodeTruncated.String()},
		{graceful.ErrRejected, wire.CodeRejected.String()},
		{graceful.ErrSenderFailed, wire.CodeSenderFailed.String()},
		{graceful.ErrPeerClosed, wire.CodePeerClosed.String()},
		{graceful.ErrBusy, wire.CodeBusy.String()},
	} {
		if errors.Is(c.err, m.err) {
			return m.code
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

// policy is the Authorize hook for a list of uids (feature authorize); nil
// keeps the library's default.
func policy(uids *[]int) func(graceful.PeerCred) error {
	if uids == nil {
		return nil
	}
	allowed := append([]int{}, (*uids)...)
	return func(c graceful.PeerCred) error {
		if slices.Contains(allowed, c.UID) {
			return nil
		}
		return fmt.Errorf("uid %d is not in %v", c.UID, allowed)
	}
}

// server is the graceful.Server for a serve or send request, reporting
// each connection's end on outcomes.
func server(req kit.ServeRequest, outcomes chan kit.Outcome) *graceful.Server {
	descs := req.Descriptors
	return &graceful.Server{
		Timeout:        req.Timeout,
		ReadyTimeout:   req.ReadyTimeout,
		SessionTimeout: req.SessionTimeout,
		MaxPending:     req.MaxPending,
		Authorize:      policy(req.Authorize),
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
}

// Serve runs a graceful.Server on the socket path.
func (a *adapter) Serve(req kit.ServeRequest) (<-chan kit.Outcome, error) {
	outcomes := make(chan kit.Outcome, 256)
	s := server(req, outcomes)
	ln, err := graceful.Listen(req.Socket)
	if err != nil {
		return nil, wrap(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	a.mu.Lock()
	a.server, a.served = s, served
	a.mu.Unlock()
	return outcomes, nil
}

// Send dials a listening receiver and serves that connection (feature
// dial).
func (a *adapter) Send(req kit.ServeRequest) kit.Outcome {
	outcomes := make(chan kit.Outcome, 256)
	s := server(req, outcomes)
	conn, err := net.DialTimeout("unix", req.Socket, req.Timeout)
	if err != nil {
		return kit.Outcome{Err: wrap(err)}
	}
	defer conn.Close()
	s.ServeConn(conn)
	// ServeConn reports every session of the connection: the last counts.
	var last kit.Outcome
	for {
		select {
		case o := <-outcomes:
			last = o
		default:
			return last
		}
	}
}

// Receive runs the sessions of a request with graceful.Client.
func (a *adapter) Receive(req kit.ReceiveRequest) ([]kit.Received, error) {
	c := &graceful.Client{Timeout: req.Timeout, CheckKinds: true, SessionTimeout: req.SessionTimeout,
		MaxFds: req.MaxFds, MaxMetaBytes: req.MaxMetaBytes, Authorize: policy(req.Authorize)}
	var got []kit.Received
	refused := false
	cb := func(fd int, meta io.Reader) error {
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
		if len(got)-1 == req.Reject && !refused {
			refused = true
			return errors.New("refused by the adapter")
		}
		return nil
	}
	if req.Sessions <= 1 {
		if req.Ready {
			return got, wrap(c.Receive(req.Socket, cb))
		}
		conn, err := c.Dial(req.Socket)
		if err != nil {
			return nil, wrap(err)
		}
		defer conn.Close()
		return got, wrap(c.ReceiveFrom(conn, cb))
	}
	conn, err := c.Dial(req.Socket)
	if err != nil {
		return nil, wrap(err)
	}
	defer conn.Close()
	for i := 0; i < req.Sessions; i++ {
		if err := c.ReceiveFrom(conn, cb); err != nil {
			return got, wrap(err)
		}
		if req.Ready {
			if err := c.Ready(conn); err != nil {
				return got, wrap(err)
			}
		}
	}
	return got, nil
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
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "adapter: the server did not stop within 10 s")
	}
	return err
}
