package graceful

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleGrace is how long HTTPDrainer lets an idle keep-alive
// connection send one more request before it closes it.
const DefaultIdleGrace = 500 * time.Millisecond

// HTTPDrainer stops an http.Server after a hand-off without dropping a
// request on a connection the server already accepted.
//
// http.Server.Shutdown is not enough there: a connection accepted just
// before Shutdown, whose request is read after it began, is closed without a
// response. HTTPDrainer instead closes the server's listeners, waits for
// Serve to return (so every accepted connection is known), answers every
// further request with "Connection: close", closes connections left idle
// longer than IdleGrace, and waits until none is left.
//
// Create it before serving, and serve through it:
//
//	d := graceful.NewHTTPDrainer(srv)
//	go d.Serve(ln)
//	// ... hand ln to the new process; once it is ready:
//	err := d.Drain(ctx)
type HTTPDrainer struct {
	// IdleGrace: zero means DefaultIdleGrace.
	IdleGrace time.Duration

	srv      *http.Server
	mu       sync.Mutex
	draining bool
	conns    map[net.Conn]connInfo
	changed  chan struct{} // closed and replaced on every state change
	lns      []net.Listener
	serving  sync.WaitGroup
}

type connInfo struct {
	state http.ConnState
	since time.Time
}

// NewHTTPDrainer prepares srv to be drained: it wraps srv.ConnState and
// srv.Handler, keeping what they did.
func NewHTTPDrainer(srv *http.Server) *HTTPDrainer {
	d := &HTTPDrainer{srv: srv, conns: make(map[net.Conn]connInfo), changed: make(chan struct{})}
	prevState := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		d.track(c, st)
		if prevState != nil {
			prevState(c, st)
		}
	}
	next := srv.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.isDraining() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
	return d
}

// Serve serves srv on ln until Drain. It returns nil when Drain closed ln.
func (d *HTTPDrainer) Serve(ln net.Listener) error {
	d.mu.Lock()
	if d.draining {
		d.mu.Unlock()
		return ln.Close()
	}
	d.lns = append(d.lns, ln)
	d.serving.Add(1)
	d.mu.Unlock()
	defer d.serving.Done()
	err := d.srv.Serve(drainListener{ln})
	if d.isDraining() {
		return nil
	}
	return err
}

// Drain stops accepting and waits until every accepted connection has
// been served and closed. When ctx ends first, it closes what is left and
// returns ctx's error.
func (d *HTTPDrainer) Drain(ctx context.Context) error {
	d.mu.Lock()
	d.draining = true
	var err error
	for _, ln := range d.lns {
		if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
	}
	d.mu.Unlock()

	served := make(chan struct{})
	go func() { d.serving.Wait(); close(served) }()
	select {
	case <-served:
	case <-ctx.Done():
		d.closeAll()
		<-served
		return ctx.Err()
	}

	grace := d.IdleGrace
	if grace <= 0 {
		grace = DefaultIdleGrace
	}
	tick := time.NewTicker(grace / 4)
	defer tick.Stop()
	for {
		d.mu.Lock()
		left, changed := len(d.conns), d.changed
		for c, info := range d.conns {
			if info.state == http.StateIdle && time.Since(info.since) >= grace {
				closeIfIdle(c)
			}
		}
		d.mu.Unlock()
		if left == 0 {
			return err
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-ctx.Done():
			d.closeAll()
			return ctx.Err()
		}
	}
}

// Active reports how many connections are open.
func (d *HTTPDrainer) Active() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

func (d *HTTPDrainer) track(c net.Conn, st http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(d.conns, c)
	default:
		d.conns[c] = connInfo{state: st, since: time.Now()}
	}
	if dc, ok := c.(*drainConn); ok && st == http.StateIdle {
		dc.state.Store(connIdle)
	}
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *HTTPDrainer) isDraining() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

func (d *HTTPDrainer) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c := range d.conns {
		c.Close()
	}
}

// An idle keep-alive connection can receive a request at the very moment
// the drainer closes it: the server would read it, fail to answer, and the
// client would retry a request that was already handled. drainConn closes
// that window: the drainer closes only a connection it can move from idle
// to closing, and a read that returns bytes first moves it to active, or
// drops them when the drainer won (so the request is never handled, and the
// client's retry is its only execution).
const (
	connActive int32 = iota
	connIdle
	connClosing
)

type drainListener struct{ net.Listener }

func (l drainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &drainConn{Conn: c}, nil
}

type drainConn struct {
	net.Conn
	state atomic.Int32
}

func (c *drainConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.state.CompareAndSwap(connIdle, connActive) && c.state.Load() == connClosing {
		return 0, net.ErrClosed
	}
	return n, err
}

func closeIfIdle(c net.Conn) {
	dc, ok := c.(*drainConn)
	if !ok {
		c.Close()
		return
	}
	if dc.state.CompareAndSwap(connIdle, connClosing) {
		dc.Conn.Close()
	}
}
