package graceful

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Server offers its descriptors to receivers that connect to it: for each
// connection it runs one session, in which Handler writes the descriptors.
// One session runs at a time; a receiver that says HELLO meanwhile is told
// the server is busy (ErrBusy) unless that session ends within busyWait
// (2 ms), whatever the Handler is doing. (The wait serves the common case
// at once: the receiver before it has sent ACK and READY, and the session
// ends as soon as this side reads them.)
//
// Each connection is served on a goroutine of its own, through package
// net: a connection that waits costs a goroutine parked in Go's poller and
// a few hundred bytes, never an OS thread. The peer's credentials are
// checked right after accept, before a byte is read; a refused peer is
// answered ERROR UNAUTHORIZED and closed. Until its HELLO is in, a
// connection holds only a 20-byte buffer, and at most MaxPending such
// connections are kept: when another arrives, the one that has waited
// longest for its HELLO is closed, once MaxPending have passed the
// credential check (those not checked yet are checked first, so that a
// flood from a refused user never closes a connection of a served one).
//
// Its zero value, with a Handler, is ready to use.
type Server struct {
	// Handler writes the descriptors of every session.
	Handler Handler
	// Timeout bounds each blocking step of a session: the wait for HELLO
	// and for ACK, each write. Zero means DefaultTimeout.
	Timeout time.Duration
	// SessionTimeout bounds a whole session, from accept to READY (or to
	// ACK when ReadyTimeout is negative), whatever each step takes. Zero
	// means three times Timeout (30 s by default). It also cuts the wait
	// for READY short: raise it with ReadyTimeout.
	SessionTimeout time.Duration
	// ReadyTimeout bounds the wait for the receiver's READY after its ACK:
	// meanwhile, other receivers are told BUSY. Zero means
	// DefaultReadyTimeout (10 s); a negative value means the server does
	// not wait, and a session succeeds on ACK.
	ReadyTimeout time.Duration
	// Authorize decides whether the peer may take the descriptors. Nil
	// means the peer must run as this process's effective user. A peer
	// whose uid or gid is the kernel's overflow id (an unmapped user of
	// another user namespace, usually 65534) is refused before Authorize
	// is asked.
	Authorize func(PeerCred) error
	// MaxPending bounds the connections accepted whose HELLO is not in yet.
	// When another arrives and MaxPending of them wait for their HELLO
	// past the credential check, the one waiting longest is closed; until
	// then, accepting waits for the others to be checked. Zero means
	// DefaultMaxPending (64).
	MaxPending int
	// Logger receives the server's messages; nil means no logging (see
	// NewSlogLogger for loggers with Debugf, Infof, Errorf). A session
	// that fails is logged once, at error level; a receiver turned away
	// as BUSY at debug level. Connections that fail before their HELLO (a
	// refused peer, one that never speaks) write at most one line a
	// second, counting those not written; Close writes the last count.
	Logger *slog.Logger
	// Done, when set, is called at the end of every connection the Server
	// served, with nil when the receiver acknowledged the whole set and
	// said it was ready (or acknowledged it, when ReadyTimeout is
	// negative), otherwise with the reason, an *OpError. An error matching
	// ErrBusy or ErrUnauthorized means the set was not offered: the
	// receiver was turned away. A connection closed by its peer before
	// its first byte (such as Listen's check for a live server) is not a
	// session: Done is not called for it.
	//
	// Done runs on the connection's goroutine, once the Server has closed
	// a connection it accepted (ServeConn leaves yours open), and once the
	// session no longer counts as running: it may call Close, which then
	// does not wait for it. It may still be running when Close returns.
	Done func(err error)

	mu       sync.Mutex
	closed   bool
	quit     chan struct{} // closed by Close
	busy     bool
	released chan struct{} // closed when busy ends, for claims that wait; nil when none waits
	ln       net.Listener
	addr     string
	conns    map[*accepted]struct{}
	pending  list.List // of *accepted whose HELLO is not in, oldest first
	sessions sync.WaitGroup
	flood    floodLog
}

// accepted is a connection the Server accepted. Its fields other than c
// and start are guarded by the Server's mu.
type accepted struct {
	c       net.Conn
	start   time.Time
	peer    PeerCred      // its credentials, once known, for the log
	elem    *list.Element // in pending, until the HELLO is in
	waiting bool          // its goroutine waits for the HELLO
	evicted bool          // closed to make room (MaxPending)
}

// ListenAndServe serves the Handler h on the unix socket at addr, with a
// Server's defaults.
func ListenAndServe(addr string, h Handler) error {
	s := &Server{Handler: h}
	return s.ListenAndServe(addr)
}

// Serve serves the Handler h on ln, with a Server's defaults.
func Serve(ln net.Listener, h Handler) error {
	s := &Server{Handler: h}
	return s.Serve(ln)
}

// ListenAndServe creates the unix socket at addr, as Listen does, and
// serves on it until Close. While a live server answers at addr (the
// previous generation, still closing its own Server), it tries again for
// up to Timeout before it gives up with ErrAddrInUse.
func (s *Server) ListenAndServe(addr string) error {
	deadline := time.Now().Add(stepTimeout(s.Timeout))
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		ln, err := s.listen(addr)
		if err == nil {
			return s.serve(ln, addr)
		}
		if err == ErrServerClosed {
			return err
		}
		if !errors.Is(err, errLive) || time.Now().Add(pause).After(deadline) {
			return opError("listen", addr, err)
		}
		select {
		case <-s.quitCh():
			return ErrServerClosed
		case <-time.After(pause):
		}
	}
}

// listen creates the socket at addr unless the Server is closed, and
// makes it the Server's at once: a Close that comes before serve begins
// closes it, so that nothing listens once Close has returned.
func (s *Server) listen(addr string) (*net.UnixListener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrServerClosed
	}
	ln, err := listen(addr)
	if err == nil {
		s.ln, s.addr = ln, addr
	}
	return ln, err
}

// Serve accepts receivers on ln until Close, and closes ln then. It
// returns ErrServerClosed after Close. On a unix listener it turns
// descriptor passing off (SO_PASSRIGHTS, Linux 6.16 and later), so that no
// peer can push descriptors into this process; a Server never reads
// descriptors in any case.
func (s *Server) Serve(ln net.Listener) error {
	if sc, ok := ln.(syscall.Conn); ok {
		fdpass.SetPassRights(sc, false) // best effort: reads take none anyway
	}
	return s.serve(ln, ln.Addr().String())
}

func (s *Server) serve(ln net.Listener, addr string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln, s.addr = ln, addr
	s.mu.Unlock()
	log := logger{s.Logger}
	pause := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				s.flood.note(log, "graceful: accept failed; retrying", "addr", addr, "err", err, "pause", pause)
				time.Sleep(pause)
				continue
			}
			return opError("serve", addr, err)
		}
		pause = 0
		ac := &accepted{c: c, start: time.Now(), peer: PeerCred{PID: -1, UID: -1, GID: -1}}
		if !s.admit(ac) {
			c.Close()
			return ErrServerClosed
		}
		go s.serveAccepted(ac)
	}
}

// admit counts ac as running and pending, closing the connection that has
// waited longest for its HELLO when MaxPending wait for theirs. It reports
// false after Close.
func (s *Server) admit(ac *accepted) bool {
	limit := s.maxPending()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false
		}
		if s.pending.Len() >= limit {
			if !s.evictOldest(limit) {
				// Some pending connections are still to be checked by
				// their goroutines: let them run (a refused one is closed
				// at once) rather than close one that waits for its HELLO.
				s.mu.Unlock()
				runtime.Gosched()
				continue
			}
		}
		if s.conns == nil {
			s.conns = make(map[*accepted]struct{})
		}
		s.conns[ac] = struct{}{}
		ac.elem = s.pending.PushBack(ac)
		s.sessions.Add(1)
		s.mu.Unlock()
		return true
	}
}

func (s *Server) maxPending() int {
	if s.MaxPending > 0 {
		return s.MaxPending
	}
	return DefaultMaxPending
}

// evictOldest shuts down the oldest pending connection whose goroutine
// waits for its HELLO, when limit of them wait, and reports whether it
// did. Connections not yet checked do not count: were they to, a flood
// from a user the Server refuses would close the connections of the
// users it serves, the only ones that ever wait. s.mu is held.
func (s *Server) evictOldest(limit int) bool {
	var oldest *accepted
	waiting := 0
	for e := s.pending.Front(); e != nil; e = e.Next() {
		if ac := e.Value.(*accepted); ac.waiting {
			if oldest == nil {
				oldest = ac
			}
			waiting++
		}
	}
	if waiting < limit {
		return false
	}
	oldest.evicted = true
	s.unpend(oldest)
	shutdown(oldest.c)
	return true
}

// unpend takes ac out of the pending list. s.mu is held.
func (s *Server) unpend(ac *accepted) {
	if ac.elem != nil {
		s.pending.Remove(ac.elem)
		ac.elem = nil
	}
}

// serveAccepted serves one accepted connection, closes it, and reports.
func (s *Server) serveAccepted(ac *accepted) {
	claimed, err := s.serveConn(ac)
	s.mu.Lock()
	s.unpend(ac)
	delete(s.conns, ac)
	s.mu.Unlock()
	ac.c.Close()
	s.sessions.Done()
	s.report(ac.peer, err, claimed)
}

// serveConn runs the session of an accepted connection: credentials first,
// then HELLO, then the set. claimed reports whether it held the set (and
// others were told BUSY).
func (s *Server) serveConn(ac *accepted) (claimed bool, err error) {
	c, err := unixConn(ac.c)
	if err != nil {
		return false, err
	}
	cfg := s.config(ac.start)
	cred, err := checkPeer(c, s.Authorize)
	ac.peer = cred
	if err != nil {
		tell(c, err, cfg.timeout)
		return false, err
	}
	s.mu.Lock()
	ac.waiting = true
	s.mu.Unlock()
	deadline, bySession := helloDeadline(cfg)
	hello, err := readHello(c, cfg.timeout, deadline, bySession)
	s.mu.Lock()
	s.unpend(ac)
	evicted := ac.evicted
	s.mu.Unlock()
	if evicted {
		return false, fmt.Errorf("closed before its HELLO to make room: %d connections were waiting for theirs (MaxPending)", s.maxPending())
	}
	if err != nil {
		tell(c, err, cfg.timeout)
		return false, err
	}
	return s.offer(c, hello, cfg)
}

// offer runs the session from HELLO on, holding the set if it is free.
func (s *Server) offer(c *net.UnixConn, hello wire.Hello, cfg senderConfig) (claimed bool, err error) {
	cfg.srv = s
	claimed, err = offer(c, hello, cfg, nil)
	if claimed {
		s.release()
	}
	return claimed, err
}

// helloDeadline is when the wait for HELLO ends: after a step, or at the
// session's deadline when that comes first.
func helloDeadline(cfg senderConfig) (time.Time, bool) {
	d := time.Now().Add(cfg.timeout)
	if cfg.session.Before(d) {
		return cfg.session, true
	}
	return d, false
}

func (s *Server) handle(c net.Conn, w ResponseWriter) {
	if s.Handler != nil {
		s.Handler.Handle(c, w)
	}
}

// Close stops accepting, ends sessions in progress and waits for them
// (but not for a Done that calls Close). Once it returns, nothing listens
// on the Server's socket, even when ListenAndServe had only just created
// it. Calling it again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	var err error
	if !s.closed {
		s.closed = true
		if s.ln != nil {
			err = s.ln.Close()
		}
		if s.quit != nil {
			close(s.quit)
		}
	}
	for ac := range s.conns {
		// A session may be blocked reading its socket: shutting it down
		// wakes it, and the session closes its own connection.
		shutdown(ac.c)
	}
	s.mu.Unlock()
	s.sessions.Wait()
	s.flood.flush(logger{s.Logger})
	return err
}

// quitCh is closed by Close.
func (s *Server) quitCh() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quit == nil {
		s.quit = make(chan struct{})
		if s.closed {
			close(s.quit)
		}
	}
	return s.quit
}

// shutdown wakes whoever waits on c, in this process or the peer's.
func shutdown(c net.Conn) {
	if sc, ok := c.(syscall.Conn); !ok || fdpass.Shutdown(sc) != nil {
		c.Close()
	}
}

func (s *Server) config(start time.Time) senderConfig {
	cfg := senderConfig{
		timeout:      stepTimeout(s.Timeout),
		readyTimeout: s.ReadyTimeout,
		session:      start.Add(sessionTimeout(s.SessionTimeout, s.Timeout)),
		log:          logger{s.Logger},
	}
	if cfg.readyTimeout == 0 {
		cfg.readyTimeout = DefaultReadyTimeout
	}
	return cfg
}

// report logs how a connection ended and tells Done: a session (claimed)
// at error or info level, a BUSY turn-away at debug level, any other
// failure before the session through the flood log. A connection closed
// before its first byte (io.EOF alone) is not a session.
func (s *Server) report(peer PeerCred, err error, claimed bool) {
	log := logger{s.Logger}
	level, msg, flooded := slog.LevelError, "graceful: session failed", false
	switch {
	case err == io.EOF:
		level, msg = slog.LevelDebug, "graceful: connection closed before its first byte"
	case err == nil:
		level, msg = slog.LevelInfo, "graceful: handed the set"
	case claimed:
	case errors.Is(err, ErrBusy):
		level, msg = slog.LevelDebug, "graceful: receiver told BUSY"
	default:
		s.flood.note(log, "graceful: connection failed before its session", "peer", peer, "err", err)
		flooded = true
	}
	if !flooded && log.enabled(level) {
		if err != nil && err != io.EOF {
			log.log(level, msg, "peer", peer, "err", err)
		} else {
			log.log(level, msg, "peer", peer)
		}
	}
	if err == io.EOF || s.Done == nil {
		return
	}
	s.mu.Lock()
	addr := s.addr
	s.mu.Unlock()
	s.Done(opError("serve", addr, err))
}

// ServeConn runs sessions on conn, a connection the caller made (accepted
// or dialed), until the receiver closes it between two sessions; then it
// returns nil (before a first session, ErrPeerClosed, and Done does not
// hear of it). The peer's credentials are checked first, as a Server
// checks those it accepts; for the duration of the call, conn refuses
// descriptors (SO_PASSRIGHTS, where the kernel has it). Each session sends
// what Handler writes, one set at a time with the Server's other
// sessions. A HELLO that comes where READY is due ends that session as not
// ready (ErrNotReady) and begins the next one; a Server's own connections
// are closed then instead. conn stays open and the caller's: no byte after
// the last session is read, and no deadline is left on it.
func (s *Server) ServeConn(conn net.Conn) error {
	uc, err := unixConn(conn)
	if err != nil {
		return opError("serve", "", err)
	}
	addr := connAddr(uc)
	cred, err := checkPeer(uc, s.Authorize)
	if err != nil {
		tell(uc, err, stepTimeout(s.Timeout))
		uc.SetDeadline(time.Time{})
		s.report(cred, err, false)
		return opError("serve", addr, err)
	}
	defer refuseRights(uc)()
	defer uc.SetDeadline(time.Time{})
	var buf [helloSize]byte // one for every session
	var next *wire.Hello    // a HELLO read where READY was due
	for sessions := 0; ; sessions++ {
		claimed, err := s.serveOnConn(uc, &buf, next)
		// A receiver that closes between sessions is ending the
		// connection, not failing a session: that is not reported.
		if errors.Is(err, io.EOF) {
			if sessions > 0 {
				return nil
			}
			return opError("serve", addr, fmt.Errorf("%w: closed before HELLO", ErrPeerClosed))
		}
		s.report(cred, err, claimed)
		next = nil
		var again *helloWhereReady
		if errors.As(err, &again) {
			next = &again.hello
			continue
		}
		if err != nil {
			return opError("serve", addr, err)
		}
	}
}

// serveOnConn runs one session of ServeConn, from hello when the previous
// session read it already.
func (s *Server) serveOnConn(uc *net.UnixConn, buf *[helloSize]byte, hello *wire.Hello) (claimed bool, err error) {
	cfg := s.config(time.Now())
	cfg.exact = true
	if hello != nil {
		return s.offer(uc, *hello, cfg)
	}
	deadline, bySession := helloDeadline(cfg)
	h, err := readHelloInto(uc, buf, cfg.timeout, deadline, bySession)
	if err != nil {
		tell(uc, err, cfg.timeout)
		return false, err
	}
	return s.offer(uc, h, cfg)
}

// connAddr names a caller's connection in errors: the address it is
// connected to, or bound to.
func connAddr(c *net.UnixConn) string {
	for _, a := range []net.Addr{c.RemoteAddr(), c.LocalAddr()} {
		if a != nil && a.String() != "" && a.String() != "@" { // "@": unnamed
			return a.String()
		}
	}
	return ""
}

// refuseRights turns descriptor passing off on c, where the kernel can
// (SO_PASSRIGHTS), and returns what turns it back on.
func refuseRights(c *net.UnixConn) (restore func()) {
	on, known, err := fdpass.PassRights(c)
	if err != nil || !known || !on || fdpass.SetPassRights(c, false) != nil {
		return func() {}
	}
	return func() { fdpass.SetPassRights(c, true) }
}

// busyWait is how long a HELLO that finds the set held waits for the
// session holding it to end before it is answered BUSY (AUTH-4 allows a
// short wait). A var for the tests.
var busyWait = 2 * time.Millisecond

// claim takes the set for a session, waiting up to busyWait for the
// session holding it to end; false means the caller answers BUSY.
func (s *Server) claim() bool {
	var timeout <-chan time.Time
	s.mu.Lock()
	for s.busy {
		if timeout == nil {
			t := time.NewTimer(busyWait)
			defer t.Stop()
			timeout = t.C
		}
		if s.released == nil {
			s.released = make(chan struct{})
		}
		released := s.released
		s.mu.Unlock()
		select {
		case <-released:
		case <-timeout:
			return false
		}
		s.mu.Lock()
	}
	s.busy = true
	s.mu.Unlock()
	return true
}

func (s *Server) release() {
	s.mu.Lock()
	s.busy = false
	if s.released != nil {
		close(s.released)
		s.released = nil
	}
	s.mu.Unlock()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
