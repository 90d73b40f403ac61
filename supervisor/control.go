//go:build linux

package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// The control protocol: the client sends one line, "restart" or "status";
// the supervisor answers with one JSON object (a response) on one line and
// closes the connection.

// controlTimeout bounds reading a request and writing a response.
const controlTimeout = 10 * time.Second

type response struct {
	OK     bool        `json:"ok"`
	Code   string      `json:"code,omitempty"` // the error's kind, see codes
	Error  string      `json:"error,omitempty"`
	Gen    *Generation `json:"gen,omitempty"`
	Status *Status     `json:"status,omitempty"`
}

// codes name the sentinel errors on the wire.
var codes = map[string]error{
	"restart-failed": ErrRestartFailed,
	"not-serving":    ErrNotServing,
	"stopping":       ErrStopping,
	"unauthorized":   ErrUnauthorized,
}

func codeOf(err error) string {
	for code, sentinel := range codes {
		if errors.Is(err, sentinel) {
			return code
		}
	}
	return "error"
}

type controlServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// listenControl creates the control socket at path, refusing to take it
// from a supervisor that still answers there.
func listenControl(path string) (*controlServer, error) {
	ln, err := graceful.Listen(path) // refuses a socket a server answers on
	if errors.Is(err, graceful.ErrAddrInUse) {
		return nil, fmt.Errorf("supervisor: another supervisor runs with %s? choose another directory: %w", filepath.Dir(path), err)
	}
	if err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	return &controlServer{ln: ln, conns: map[net.Conn]bool{}}, nil
}

func (c *controlServer) serve(s *Supervisor) {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: the next accept may work.
			select {
			case <-s.quit:
				return
			case <-time.After(10 * time.Millisecond):
				continue
			}
		}
		c.mu.Lock()
		if c.conns == nil { // closed
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.conns[conn] = true
		c.wg.Add(1)
		c.mu.Unlock()
		go func() {
			defer c.wg.Done()
			c.handle(s, conn.(*net.UnixConn))
			c.mu.Lock()
			delete(c.conns, conn)
			c.mu.Unlock()
			conn.Close()
		}()
	}
}

func (c *controlServer) handle(s *Supervisor, conn *net.UnixConn) {
	conn.SetDeadline(time.Now().Add(controlTimeout))
	var resp response
	if err := checkPeer(conn); err != nil {
		s.log.Warn("control connection refused", "err", err)
		resp = response{Code: codeOf(err), Error: err.Error()}
	} else {
		line, err := bufio.NewReaderSize(conn, 256).ReadString('\n')
		if err != nil {
			return
		}
		resp = c.request(s, strings.TrimSpace(line))
		conn.SetDeadline(time.Now().Add(controlTimeout))
	}
	b, _ := json.Marshal(resp)
	conn.Write(append(b, '\n'))
}

func (c *controlServer) request(s *Supervisor, req string) response {
	switch req {
	case "restart":
		// The restart ends within its own deadlines (ReadyTimeout), and
		// the connection's deadline is set again afterwards.
		s.log.Info("restart requested on the control socket")
		g, err := s.Restart(context.Background())
		if err != nil {
			return response{Code: codeOf(err), Error: err.Error()}
		}
		return response{OK: true, Gen: &g}
	case "status":
		st, ok := s.Status()
		if !ok {
			return response{Code: "stopping", Error: ErrStopping.Error()}
		}
		return response{OK: true, Status: &st}
	}
	return response{Code: "error", Error: fmt.Sprintf("unknown request %q: want restart or status", req)}
}

func (c *controlServer) close() {
	c.ln.Close()
	c.mu.Lock()
	for conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
	c.mu.Unlock()
	c.wg.Wait()
}

// checkPeer applies the hand-off socket's rule: the peer must run as this
// process's effective user.
func checkPeer(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	if int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: uid %d (pid %d), this supervisor runs as uid %d", ErrUnauthorized, cred.Uid, cred.Pid, os.Geteuid())
	}
	return nil
}

// RequestRestart asks the supervisor whose runtime directory is dir to
// restart its service, and waits for the outcome: the generation that
// took over, or an error matching ErrRestartFailed (the new generation was
// killed), ErrNotServing (refused: nothing serves yet), ErrStopping or
// ErrUnauthorized. The supervisor bounds the restart by its ReadyTimeout;
// ctx bounds the wait as well.
func RequestRestart(ctx context.Context, dir string) (Generation, error) {
	resp, err := request(ctx, dir, "restart")
	if err != nil {
		return Generation{}, err
	}
	return *resp.Gen, nil
}

// RequestStatus returns the status of the supervisor whose runtime
// directory is dir.
func RequestStatus(ctx context.Context, dir string) (Status, error) {
	resp, err := request(ctx, dir, "status")
	if err != nil {
		return Status{}, err
	}
	return *resp.Status, nil
}

func request(ctx context.Context, dir, req string) (response, error) {
	path := filepath.Join(dir, "control.sock")
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return response{}, fmt.Errorf("supervisor: no supervisor answers at %s: %w", path, err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := checkPeer(conn); err != nil {
		return response{}, fmt.Errorf("supervisor: %s: %w", path, err)
	}
	if _, err := conn.Write([]byte(req + "\n")); err != nil {
		return response{}, fmt.Errorf("supervisor: %s: %w", path, err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return response{}, fmt.Errorf("supervisor: %s: no answer: %w", path, err)
	}
	if !resp.OK {
		if sentinel, ok := codes[resp.Code]; ok {
			return resp, fmt.Errorf("%w%s", sentinel, strings.TrimPrefix(resp.Error, sentinel.Error()))
		}
		return resp, fmt.Errorf("supervisor: %s", resp.Error)
	}
	if (req == "restart" && resp.Gen == nil) || (req == "status" && resp.Status == nil) {
		return resp, fmt.Errorf("supervisor: %s: malformed answer", path)
	}
	return resp, nil
}
