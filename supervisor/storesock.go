//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// StoreEnv names the variable that gives every generation the path of the
// supervisor's store socket, where a program that speaks the graceful
// protocol stores descriptors the way FDSTORE=1 does: it dials the socket
// and sends them (graceful.SendListenerTo and friends), each with
// graceful.Meta{"name": NAME} for FDNAME. It is unset when the store is
// off (Config.FdStoreMax < 0).
const StoreEnv = "GRACEFUL_STORE"

// storeTimeout bounds each step of a session on the store socket; the
// whole session gets three of them.
const storeTimeout = 5 * time.Second

// storeServer receives descriptors at the store socket, one connection at
// a time: only this user can reach the socket (the supervisor's directory
// is 0700), and a session is bounded in time, so one slow sender delays
// the next by a session at most.
type storeServer struct {
	path    string
	ln      net.Listener
	mu      sync.Mutex
	conn    *net.UnixConn // the connection being served, shut down by close
	started bool          // serve runs, and closes done when it returns
	done    chan struct{}
}

// listenStore creates the store socket at path, in the supervisor's
// private directory. Not with graceful.Listen: that socket is a sender's,
// and refuses descriptors (SO_PASSRIGHTS off), which the store must take.
func listenStore(path string) (*storeServer, error) {
	os.Remove(path) // a previous supervisor's, left behind: the directory is ours
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("supervisor: store socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("supervisor: store socket: %w", err)
	}
	return &storeServer{path: path, ln: ln, done: make(chan struct{})}, nil
}

// start runs serve on a goroutine of its own.
func (ss *storeServer) start(s *Supervisor) {
	ss.mu.Lock()
	ss.started = true
	ss.mu.Unlock()
	go ss.serve(s)
}

func (ss *storeServer) serve(s *Supervisor) {
	defer close(ss.done)
	for {
		c, err := ss.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select { // EMFILE and the like: the next accept may work
			case <-s.quit:
				return
			case <-time.After(10 * time.Millisecond):
				continue
			}
		}
		uc := c.(*net.UnixConn)
		ss.mu.Lock()
		ss.conn = uc
		ss.mu.Unlock()
		ss.receive(s, uc)
		ss.mu.Lock()
		ss.conn = nil
		ss.mu.Unlock()
		uc.Close()
	}
}

// receive takes every set a generation sends on conn into the store. A
// sender that is not a process of a running generation is refused before
// it sends anything (UNAUTHORIZED).
func (ss *storeServer) receive(s *Supervisor, conn *net.UnixConn) {
	var from graceful.PeerCred
	client := graceful.Client{
		Timeout: storeTimeout,
		Authorize: func(p graceful.PeerCred) error {
			from = p
			var owned bool
			if !s.do(func() { owned = s.st.owner(p.PID, p.UID) != nil }) || !owned {
				return fmt.Errorf("%w: pid %d (uid %d) is not a process of a running generation", ErrUnauthorized, p.PID, p.UID)
			}
			return nil
		},
	}
	err := client.ReceiveAllFrom(conn, func(fd int, meta io.Reader) error {
		name := "stored"
		if m, err := graceful.MetaFrom(meta); err == nil && m["name"] != "" {
			name = m["name"]
		}
		stored := s.do(func() {
			g := s.st.owner(from.PID, from.UID)
			if g == nil || s.st.stopping {
				unix.Close(fd)
				return
			}
			s.st.storeFds(g, name, []int{fd})
		})
		if !stored {
			unix.Close(fd)
			return ErrStopping
		}
		return nil
	})
	if err != nil && !errors.Is(err, graceful.ErrUnconfirmed) {
		s.log.Warn("store socket: session failed", "pid", from.PID, "err", err)
	}
}

// close stops accepting, ends the session in progress, and waits for serve.
func (ss *storeServer) close() {
	ss.ln.Close()
	ss.mu.Lock()
	if ss.conn != nil {
		if rc, err := ss.conn.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
		}
	}
	started := ss.started
	ss.mu.Unlock()
	if started {
		<-ss.done
	}
}
