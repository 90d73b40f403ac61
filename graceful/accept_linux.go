package graceful

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// standbyAfter is how long a session may wait on its peer before the
// Server makes sure that another goroutine accepts meanwhile. Most
// sessions are over sooner, and then the next receiver, queued in the
// listen backlog for those microseconds, is served by the same goroutine:
// no goroutine is started and no thread woken per connection. A slow
// session (a new process starting before it says READY, a peer that hangs)
// gets a standby that answers other receivers, with BUSY (AUTH-4).
const standbyAfter = time.Millisecond

// acceptWait is how long a worker waits for the next connection on its own
// thread, woken by the kernel directly, before it waits in Go's poller:
// long enough for a receiver that dials again at once, short enough that
// closing the listener (which waits for the call to return) is not held up.
const acceptWait = time.Millisecond

// acceptor serves a unix listener the fast way: accept4 and the session's
// system calls on the same thread, waiting in poll where the kernel wakes
// the thread directly, and no goroutine per connection.
type acceptor struct {
	s    *Server
	ln   *net.UnixListener
	rc   syscall.RawConn
	idle atomic.Int32 // workers waiting for a connection
	live sync.WaitGroup

	stopOnce sync.Once
	stopped  chan struct{} // closed when the workers are done, or one failed
	err      error         // why, if one failed
}

// serveFast serves ln until Close, or until accepting fails for good. It
// returns handled false, having done nothing, when ln cannot be served this
// way.
func (s *Server) serveFast(ln net.Listener) (handled bool, err error) {
	ul, isUnix := ln.(*net.UnixListener)
	if !isUnix {
		return false, nil
	}
	rc, err := ul.SyscallConn()
	if err != nil {
		return false, nil
	}
	a := &acceptor{s: s, ln: ul, rc: rc, stopped: make(chan struct{})}
	a.live.Add(1)
	go a.work()
	go func() {
		a.live.Wait()
		a.stop(nil)
	}()
	<-a.stopped
	if s.isClosed() {
		return true, ErrServerClosed
	}
	return true, a.err
}

func (a *acceptor) stop(err error) {
	a.stopOnce.Do(func() {
		a.err = err
		close(a.stopped)
	})
}

// work accepts and serves connections, each on this goroutine. It ends
// when another worker is waiting for the next connection (one is enough),
// or when accepting fails: on Close, when the listener is closed, or for
// good.
func (a *acceptor) work() {
	defer a.live.Done()
	log := logger{a.s.Logger}
	for {
		a.idle.Add(1)
		fd, peer, err := a.accept()
		a.idle.Add(-1)
		switch {
		case err == nil:
		case a.s.isClosed():
			return
		case isTemporary(err):
			log.Errorf("graceful: accept: %v; retrying", err)
			time.Sleep(10 * time.Millisecond)
			continue
		default:
			a.stop(err)
			return
		}
		a.serve(fd, peer)
		if a.idle.Load() > 0 {
			return
		}
	}
}

// accept waits for a connection briefly on this thread, then in Go's
// poller (through package net), which closing the listener wakes.
func (a *acceptor) accept() (fd int, peer string, err error) {
	cerr := a.rc.Control(func(ln uintptr) { fd, peer, err = fdpass.Accept(int(ln), acceptWait) })
	if cerr != nil {
		return -1, "", cerr
	}
	if !errors.Is(err, fdpass.ErrWouldBlock) {
		return fd, peer, err
	}
	c, err := a.ln.AcceptUnix()
	if err != nil {
		return -1, "", err
	}
	return fdpass.Detach(c)
}

// serve runs one session on the accepted socket fd.
func (a *acceptor) serve(fd int, peer string) {
	b := fdpass.NewBlocking(fd)
	b.Patience, b.Impatient = standbyAfter, a.standby
	conn := &acceptedConn{b: b, local: a.ln.Addr(), remote: &net.UnixAddr{Name: peer, Net: "unix"}}
	if !a.s.track(conn) {
		conn.release()
		return
	}
	defer a.s.sessions.Done()
	err := a.s.run(conn, b, a.s.config())
	a.s.closeAndReport(conn, err)
}

// standby starts a worker unless one is already waiting for a connection.
func (a *acceptor) standby() {
	if a.idle.Load() == 0 {
		a.live.Add(1)
		go a.work()
	}
}

// acceptedConn is the net.Conn a Handler is given for a connection the
// Server accepted on a unix listener. The session owns the byte stream:
// Read and Write fail. SyscallConn's Control reaches the socket (for
// SO_PEERCRED and the like) until the session ends; Close ends the session.
type acceptedConn struct {
	b             *fdpass.Blocking
	local, remote net.Addr

	mu       sync.Mutex
	released bool
}

var errSessionOwned = errors.New("graceful: the session owns this connection: a Handler writes to its ResponseWriter")

func (c *acceptedConn) Read([]byte) (int, error)         { return 0, errSessionOwned }
func (c *acceptedConn) Write([]byte) (int, error)        { return 0, errSessionOwned }
func (c *acceptedConn) LocalAddr() net.Addr              { return c.local }
func (c *acceptedConn) RemoteAddr() net.Addr             { return c.remote }
func (c *acceptedConn) SetDeadline(time.Time) error      { return nil }
func (c *acceptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *acceptedConn) SetWriteDeadline(time.Time) error { return nil }

// Close shuts the socket down, which ends the session; the Server closes
// the descriptor when the session is over.
func (c *acceptedConn) Close() error {
	return c.control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
}

// SyscallConn gives Control over the socket; its Read and Write fail.
func (c *acceptedConn) SyscallConn() (syscall.RawConn, error) { return acceptedRaw{c}, nil }

func (c *acceptedConn) control(f func(fd uintptr)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return net.ErrClosed
	}
	f(uintptr(c.b.Fd()))
	return nil
}

// release closes the descriptor, once the session is over.
func (c *acceptedConn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.released {
		c.released = true
		c.b.Close()
	}
}

type acceptedRaw struct{ c *acceptedConn }

func (r acceptedRaw) Control(f func(fd uintptr)) error { return r.c.control(f) }
func (acceptedRaw) Read(func(fd uintptr) bool) error   { return errSessionOwned }
func (acceptedRaw) Write(func(fd uintptr) bool) error  { return errSessionOwned }
