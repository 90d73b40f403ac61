//go:build linux

package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// notifyMax is the largest notification read; systemd accepts up to 4096
// bytes, and a longer datagram is cut (and ignored, its descriptors closed).
const notifyMax = 4096

// notifySocket is the datagram socket generations notify.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

// note is one datagram, with the kernel's credentials of its sender.
type note struct {
	pid, uid int
	lines    []string
	fds      []int
	err      error // the datagram could not be read whole: fds closed
}

func listenNotify(path string) (*notifySocket, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("supervisor: notify socket: %w", err)
	}
	fail := func(err error) (*notifySocket, error) {
		conn.Close()
		return nil, fmt.Errorf("supervisor: notify socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return fail(err)
	}
	if serr != nil {
		return fail(os.NewSyscallError("setsockopt SO_PASSCRED", serr))
	}
	return &notifySocket{path: path, conn: conn}, nil
}

func (n *notifySocket) close() { n.conn.Close() }

// serve reads datagrams until the socket is closed, and sends each to
// notes. Descriptors arrive close-on-exec (ReadMsgUnix asks for it).
func (n *notifySocket) serve(notes chan<- note, quit <-chan struct{}) {
	buf := make([]byte, notifyMax+1)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(253*4))
	for {
		nb, noob, flags, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a datagram lost; the next one may be fine
		}
		m := parseNote(buf[:nb], oob[:noob], flags)
		select {
		case notes <- m:
		case <-quit:
			closeFds(m.fds)
			return
		}
	}
}

// parseNote takes a datagram apart: its lines, its sender, its
// descriptors. A truncated datagram keeps no descriptor.
func parseNote(data, oob []byte, flags int) note {
	m := note{pid: -1, uid: -1}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		m.err = err
	}
	for _, c := range msgs {
		switch {
		case c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(&c)
			if err != nil {
				m.err = err
				continue
			}
			m.fds = append(m.fds, fds...)
		case c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(&c); err == nil {
				m.pid, m.uid = int(cred.Pid), int(cred.Uid)
			}
		}
	}
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		m.err = errors.New("control data truncated")
	case flags&unix.MSG_TRUNC != 0 || len(data) > notifyMax:
		m.err = fmt.Errorf("datagram over %d bytes", notifyMax)
	}
	if m.err != nil {
		closeFds(m.fds)
		m.fds = nil
		return m
	}
	for _, line := range strings.Split(string(bytes.TrimRight(data, "\n")), "\n") {
		if line != "" {
			m.lines = append(m.lines, line)
		}
	}
	return m
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// owner finds the generation a datagram's sender belongs to (see the
// package documentation), or nil.
func (st *state) owner(pid, uid int) *gen {
	if uid != os.Geteuid() || pid <= 0 {
		return nil
	}
	for _, g := range st.gens {
		if pid == g.PID || pid == g.MainPID {
			return g
		}
	}
	for _, g := range st.gens {
		if descends(pid, g.PID) || (g.MainPID != g.PID && descends(pid, g.MainPID)) {
			return g
		}
	}
	return nil
}

// storeFds keeps fds, which generation g stored under name (FDSTORE=1, or
// a session at the store socket): the store closes any it does not keep.
func (st *state) storeFds(g *gen, name string, fds []int) {
	log := st.s.log
	added := st.store.add(name, fds, st.s.cfg.FdStoreMax, log)
	log.Info("descriptors stored", "gen", g.N, "name", name, "new", len(added), "sent", len(fds))
	if len(added) > 0 {
		st.emit(Event{Kind: EventStored, Gen: g.Generation, Stored: st.store.names()})
		st.prepareStandby()
	}
	if st.s.cfg.Upstream && len(added) > 0 {
		if _, err := graceful.SdNotifyWithFds(added, "FDSTORE=1", "FDNAME="+name); err != nil {
			log.Warn("cannot pass stored descriptors on to the service manager", "err", err)
		}
	}
}

// notified handles one datagram.
func (st *state) notified(m note) {
	log := st.s.log
	if m.err != nil {
		log.Warn("notification dropped", "pid", m.pid, "err", m.err)
		return
	}
	g := st.owner(m.pid, m.uid)
	if g == nil {
		log.Warn("notification from a process of no generation: ignored", "pid", m.pid, "uid", m.uid, "lines", m.lines)
		closeFds(m.fds)
		return
	}
	var ready, fdstore, fdremove, barrier bool
	fdname := "stored"
	for _, line := range m.lines {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "READY":
			ready = v == "1"
		case "FDSTORE":
			fdstore = v == "1"
		case "FDSTOREREMOVE":
			fdremove = v == "1"
		case "FDNAME":
			fdname = v
		case "STATUS":
			g.Status = v
			st.emit(Event{Kind: EventStatus, Gen: g.Generation})
			if g == st.serving {
				st.upstream(graceful.NotifyStatus(st.statusLine()))
			}
		case "MAINPID":
			st.mainPID(g, v)
		case "RELOADING":
			log.Info("generation reloading", "gen", g.N)
			if g == st.serving && v == "1" {
				st.upstream(graceful.NotifyReloading())
			}
		case "STOPPING":
			log.Info("generation says it is stopping", "gen", g.N)
		case "EXTEND_TIMEOUT_USEC":
			st.extend(g, v)
		case "BARRIER":
			// sd_notify_barrier(3): closing the descriptor it sent says
			// that every earlier notification has been handled.
			barrier = v == "1"
		case "ERRNO":
			log.Warn("generation reports an error", "gen", g.N, "errno", v)
		default:
			log.Debug("notification ignored", "gen", g.N, "line", line)
		}
	}
	switch {
	case fdstore && len(m.fds) > 0:
		st.storeFds(g, fdname, m.fds)
	case barrier:
		closeFds(m.fds)
	case len(m.fds) > 0:
		log.Warn("descriptors sent without FDSTORE=1: closed", "gen", g.N, "count", len(m.fds))
		closeFds(m.fds)
	}
	if fdremove {
		n := st.store.remove(fdname)
		log.Info("stored descriptors removed", "gen", g.N, "name", fdname, "count", n)
		if n > 0 {
			st.emit(Event{Kind: EventStored, Gen: g.Generation, Stored: st.store.names()})
		}
		st.upstream("FDSTOREREMOVE=1", "FDNAME="+fdname)
	}
	if ready {
		st.ready(g)
	}
}

// mainPID handles MAINPID=: the new main process must be the generation's
// own process or one of its descendants.
func (st *state) mainPID(g *gen, v string) {
	log := st.s.log
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		log.Warn("MAINPID ignored: not a pid", "gen", g.N, "value", v)
		return
	}
	if pid == g.MainPID {
		return
	}
	if pid != g.PID && !descends(pid, g.PID) && !descends(pid, g.MainPID) {
		log.Warn("MAINPID ignored: not a process of the generation", "gen", g.N, "pid", pid)
		return
	}
	fd := -1
	if pid != g.PID {
		if fd, err = st.s.watchMain(pid); err != nil {
			log.Warn("MAINPID ignored", "gen", g.N, "pid", pid, "err", err)
			return
		}
	}
	if g.mainFd >= 0 {
		closeFd(g.mainFd)
	}
	g.MainPID, g.mainFd = pid, fd
	log.Info("generation's main process changed", "gen", g.N, "main_pid", pid)
	st.emit(Event{Kind: EventMainPID, Gen: g.Generation})
}

// extend moves a starting generation's ready deadline.
func (st *state) extend(g *gen, v string) {
	usec, err := strconv.ParseUint(v, 10, 63)
	if err != nil || g != st.starting {
		return
	}
	d := time.Duration(usec) * time.Microsecond
	g.timer.Stop()
	g.timer = time.AfterFunc(d, func() { st.s.post(func() { st.readyTimeout(g, d) }) })
}

// signalMain sends sig to g's main process.
func (st *state) signalMain(g *gen, sig unix.Signal) error {
	if g.MainPID == g.PID || g.mainFd < 0 {
		return g.proc.signal(sig)
	}
	return unix.PidfdSendSignal(g.mainFd, sig, nil, 0)
}

// killMain kills g's main process when it is not its first process.
func (st *state) killMain(g *gen) {
	if g.mainFd >= 0 {
		unix.PidfdSendSignal(g.mainFd, unix.SIGKILL, nil, 0)
	}
}

// mainAlive reports whether g's main process still runs.
func (st *state) mainAlive(g *gen) bool {
	return g.mainFd >= 0 && unix.PidfdSendSignal(g.mainFd, 0, nil, 0) == nil
}
