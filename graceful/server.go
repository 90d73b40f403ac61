package graceful

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// Server offers its descriptors to receivers that connect to it: for each
// connection it runs one session, in which Handler writes the descriptors.
// One session runs at a time; a receiver that connects meanwhile is told
// the server is busy.
//
// Its zero value, with a Handler, is ready to use.
type Server struct {
	// Handler writes the descriptors of every session.
	Handler Handler
	// Timeout bounds each blocking step of a session. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// ReadyTimeout bounds the wait for the receiver's READY after its ACK.
	// Zero means DefaultReadyTimeout; a negative value means the server does
	// not wait, and a session succeeds on ACK.
	ReadyTimeout time.Duration
	// Authorize decides whether the peer, running as uid, may take the
	// descriptors. Nil means the peer must run as this process's effective
	// user.
	Authorize func(uid int) error
	// Logger receives the server's messages: a *slog.Logger, or a value
	// with some of Debugf, Infof, Errorf. Nil means no logging.
	Logger any
	// Done, when set, is called at the end of every session: with nil when
	// the receiver acknowledged the whole set and said it was ready (or
	// acknowledged it, when ReadyTimeout is negative), otherwise with the
	// reason. It runs on the session's goroutine, after the Server has
	// closed the connection if it accepted it (ServeConn leaves yours open).
	Done func(err error)

	mu       sync.Mutex
	closed   bool
	busy     bool
	ln       net.Listener
	conns    map[net.Conn]bool
	sessions sync.WaitGroup
}

// ListenAndServe serves the Handler h on the unix socket at addr.
func ListenAndServe(addr string, h Handler) error {
	s := &Server{Handler: h}
	return s.ListenAndServe(addr)
}

// Serve serves the Handler h on ln.
func Serve(ln net.Listener, h Handler) error {
	s := &Server{Handler: h}
	return s.Serve(ln)
}

// ListenAndServe creates the unix socket at addr and serves on it until
// Close. The socket file has mode 0600 from the first moment it can be
// reached, and atomically replaces whatever socket file was at addr: a new
// generation can listen while the old one still serves its own copy.
func (s *Server) ListenAndServe(addr string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	ln, err := Listen(addr)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.ln = ln
	s.mu.Unlock()
	return s.accept(ln)
}

// Serve accepts receivers on ln until Close, and closes ln then. It
// returns ErrServerClosed after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	return s.accept(ln)
}

func (s *Server) accept(ln net.Listener) error {
	if handled, err := s.serveFast(ln); handled {
		return err
	}
	log := logger{s.Logger}
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if isTemporary(err) {
				log.Errorf("graceful: accept: %v; retrying", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		if !s.track(conn) {
			conn.Close()
			return ErrServerClosed
		}
		go s.serveConn(conn)
	}
}

// Close stops accepting, ends sessions in progress and waits for them.
// Calling it again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	var err error
	if s.ln != nil && !s.closed {
		err = s.ln.Close()
	}
	s.closed = true
	for c := range s.conns {
		// A session may be blocked reading its socket: shutting it down
		// wakes it, and the session closes its own connection.
		if sc, ok := c.(syscall.Conn); !ok || fdpass.Shutdown(sc) != nil {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.sessions.Wait()
	return err
}

func (s *Server) serveConn(conn net.Conn) {
	defer s.sessions.Done()
	err := s.serveAccepted(conn)
	s.closeAndReport(conn, err)
}

func (s *Server) serveAccepted(conn net.Conn) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%w: %T", ErrNotUnixConn, conn)
	}
	// The accepted socket is the server's alone: its session waits on the
	// thread, which the kernel wakes directly, rather than in Go's poller.
	b, err := fdpass.BlockingOf(uc)
	if err != nil {
		return err
	}
	return s.run(conn, b, s.config())
}

// closeAndReport ends a session on a connection the Server accepted: the
// socket is closed before the session is reported, so that whoever hears
// of its end (Done, the Logger) finds it gone.
func (s *Server) closeAndReport(conn net.Conn, err error) {
	s.untrack(conn)
	s.report(conn, err)
}

func (s *Server) config() senderConfig {
	cfg := senderConfig{
		timeout:      s.Timeout,
		readyTimeout: s.ReadyTimeout,
		authorize:    s.Authorize,
		log:          logger{s.Logger},
	}
	if cfg.readyTimeout == 0 {
		cfg.readyTimeout = DefaultReadyTimeout
	}
	return cfg
}

// run runs one session; its caller reports it.
func (s *Server) run(conn net.Conn, t transport, cfg senderConfig) error {
	claimed := false
	cfg.busy = func() bool {
		claimed = s.claim()
		return !claimed
	}
	err := serveSession(conn, t, cfg, func(c net.Conn, w ResponseWriter) {
		if s.Handler != nil {
			s.Handler.Handle(c, w)
		}
	})
	if claimed {
		s.release()
	}
	return err
}

func (s *Server) report(conn net.Conn, err error) {
	log := logger{s.Logger}
	if err != nil {
		log.Errorf("graceful: session with %v: %v", conn.RemoteAddr(), err)
	} else {
		log.Infof("graceful: handed descriptors to %v", conn.RemoteAddr())
	}
	if s.Done != nil {
		s.Done(err)
	}
}

// ServeConn runs sessions on conn, a connection the caller made (accepted
// or dialed), until the receiver closes it between two sessions; then it
// returns nil. Each session sends what Handler writes, one set at a time
// with the Server's other sessions. conn stays open and the caller's: no
// byte after the last session is read, and no deadline is left on it.
func (s *Server) ServeConn(conn net.Conn) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%w: %T", ErrNotUnixConn, conn)
	}
	cfg := s.config()
	cfg.exact = true
	for sessions := 0; ; sessions++ {
		err := s.run(conn, pollerConn{uc}, cfg)
		// A receiver that closes between sessions is ending the
		// connection, not failing a session: that is not reported.
		if sessions > 0 && errors.Is(err, io.EOF) {
			return nil
		}
		s.report(conn, err)
		if err != nil {
			return err
		}
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]bool)
	}
	s.conns[c] = true
	s.sessions.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	if r, ok := c.(interface{ release() }); ok {
		r.release()
	} else {
		c.Close()
	}
}

func (s *Server) claim() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy {
		return false
	}
	s.busy = true
	return true
}

func (s *Server) release() {
	s.mu.Lock()
	s.busy = false
	s.mu.Unlock()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Listen creates the unix socket that ListenAndServe serves on, for a
// program that must know when it is reachable, or serve it with Serve: it
// binds in a fresh 0700 directory beside addr, makes the socket 0600, and
// renames it onto addr, so it is never reachable with wider permissions
// (AUTH-3) and atomically replaces a previous generation's socket file.
// Closing the listener leaves the file: a successor may have renamed its own
// socket onto addr, and no check-then-remove can be atomic. A file left
// behind refuses connections, so Receive reports ErrNoServer, and the next
// Listen replaces it.
func Listen(addr string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(addr), ".gf")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, addr); err != nil {
		return fail(fmt.Errorf("graceful: place socket at %s: %w", addr, err))
	}
	return ln, nil
}
