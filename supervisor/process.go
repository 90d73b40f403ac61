//go:build linux

package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// shimEnv marks a process started as the shim (see ExecShim).
const shimEnv = "GRACEFUL_SUPERVISOR_SHIM"

// process is a started generation's first process.
type process struct {
	pid   int
	pidfd int // for signals that cannot reach a reused pid; -1 if none

	mu   sync.Mutex
	done bool // reaped: the pidfd no longer matters, the group may be gone
}

// startProcess starts a generation of s's program with l, with fds as 3,
// 4, ... (LISTEN_FDS, through the shim) when there are any, or, for a
// spare, turn as 3 (graceful.SpareEnv).
func startProcess(s *Supervisor, l *launch, fds []int, names []string, turn int) (*process, error) {
	files := []uintptr{uintptr(l.devNull), uintptr(l.outW), uintptr(l.errW)}
	for _, fd := range fds {
		files = append(files, uintptr(fd))
	}
	env := slices.Clip(l.env)
	if turn >= 0 {
		files = append(files, uintptr(turn))
		env = append(env, graceful.SpareEnv+"="+strconv.Itoa(len(files)-1))
	}
	path, argv := s.cfg.Path, append([]string{s.cfg.Path}, s.cfg.Args...)
	if len(fds) > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(fds)), "LISTEN_FDNAMES="+strings.Join(names, ":"), shimEnv+"=1")
		path, argv = s.cfg.Shim, append([]string{s.cfg.Shim}, argv...)
	}
	pidfd := -1
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			// Its own process group: a terminal's Ctrl-C reaches the
			// supervisor only, and a failed generation is killed whole.
			Setpgid: true,
			PidFD:   &pidfd,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &process{pid: pid, pidfd: pidfd}
	if !s.cfg.ReapOrphans {
		if pidfd < 0 || s.reapOnExit(pid, pidfd) != nil {
			go s.wait(pid)
		}
	}
	return p, nil
}

// generationEnv is base (nil: this process's environment) without the
// variables the supervisor sets, with NOTIFY_SOCKET and, when the store
// socket is there, StoreEnv.
func generationEnv(base []string, notify, store string) []string {
	if base == nil {
		base = os.Environ()
	}
	env := make([]string, 0, len(base)+5)
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", shimEnv, StoreEnv, graceful.SpareEnv:
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "NOTIFY_SOCKET="+notify)
	if store != "" {
		env = append(env, StoreEnv+"="+store)
	}
	return env
}

// signal sends sig to the process, unless it has been reaped.
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	if p.pidfd >= 0 {
		return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	}
	return unix.Kill(p.pid, sig)
}

// killGroup kills the process's group: the process and whatever it
// started that stayed in it.
func (p *process) killGroup() {
	p.signal(syscall.SIGKILL)
	// The group outlives its leader while members are left; its id is not
	// reused while it has any.
	unix.Kill(-p.pid, syscall.SIGKILL)
}

// exited records that the process has been reaped.
func (p *process) exited() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
}

// release closes the pidfd once the generation is over.
func (p *process) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// procExit is the end of a process: reaped (with its status) or seen
// through a pidfd (a main process that is not our child).
type procExit struct {
	pid    int
	exit   Exit
	reaped bool
}

func exitOf(ws unix.WaitStatus) Exit {
	if ws.Signaled() {
		return Exit{Code: -1, Signal: ws.Signal()}
	}
	return Exit{Code: ws.ExitStatus()}
}

// wait reaps one generation's process (when the supervisor does not reap
// every child).
func (s *Supervisor) wait(pid int) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err != unix.EINTR {
			break
		}
	}
	select {
	case s.exits <- procExit{pid: pid, exit: exitOf(ws), reaped: true}:
	case <-s.quit:
	}
}

// startReaper reaps every child on SIGCHLD when ReapOrphans is set; the
// returned function stops it.
func (s *Supervisor) startReaper() func() {
	if !s.cfg.ReapOrphans {
		return func() {}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if err == unix.EINTR {
					continue
				}
				if pid <= 0 || err != nil {
					break
				}
				select {
				case s.exits <- procExit{pid: pid, exit: exitOf(ws), reaped: true}:
				case <-stop:
					return
				}
			}
			select {
			case <-sigs:
			case <-stop:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(stop)
		<-done
	}
}

// reapOnExit reaps pid, a child, once its pidfd says it has exited, and
// reports its end on s.exits. Unlike wait, it holds no thread in wait4
// meanwhile: a blocked thread makes the runtime start or wake another one,
// on a core the new generation is starting on.
func (s *Supervisor) reapOnExit(pid, pidfd int) error {
	// It reaps even after Run returns, as wait does: a child left
	// unreaped would be reaped by whoever waits for any child next.
	return s.onExit(pidfd, false, func() procExit {
		var ws unix.WaitStatus
		flags := unix.WNOHANG
		for {
			got, err := unix.Wait4(pid, &ws, flags, nil)
			if err == unix.EINTR || (got == 0 && err == nil) {
				flags = 0 // not waitable yet, though its pidfd said it exited
				continue
			}
			break
		}
		return procExit{pid: pid, exit: exitOf(ws), reaped: true}
	})
}

// watchMain opens a pidfd on pid, a main process named by MAINPID=, and
// reports its end on s.exits: it may not be our child.
func (s *Supervisor) watchMain(pid int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return -1, os.NewSyscallError("pidfd_open", err)
	}
	err = s.onExit(pidfd, true, func() procExit { return procExit{pid: pid, exit: Exit{Code: -1}} })
	if err != nil {
		unix.Close(pidfd)
		return -1, err
	}
	return pidfd, nil
}

// onExit waits in Go's poller, on a duplicate of pidfd, for the process to
// exit (or, with untilQuit, for Run to return), and then sends what ended
// returns on s.exits; pidfd stays the caller's, for signals.
func (s *Supervisor) onExit(pidfd int, untilQuit bool, ended func() procExit) error {
	watch, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	if err := unix.SetNonblock(watch, true); err != nil {
		unix.Close(watch)
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(watch), "pidfd") // non-blocking: Go's poller waits
	go func() {
		defer f.Close()
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		if untilQuit {
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				select {
				case <-s.quit:
					f.SetReadDeadline(time.Now()) // wake the Read below
				case <-stop:
				}
			}()
		}
		if rc.Read(func(fd uintptr) bool {
			n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return n > 0
		}) != nil {
			return
		}
		exit := ended()
		select {
		case s.exits <- exit:
		case <-s.quit:
		}
	}()
	return nil
}

func closeFd(fd int) { unix.Close(fd) }

// descends reports whether pid is ancestor or one of its descendants,
// following /proc/<pid>/stat's parent links.
func descends(pid, ancestor int) bool {
	for range 64 {
		if pid == ancestor {
			return true
		}
		if pid <= 1 {
			return false
		}
		ppid, err := parentOf(pid)
		if err != nil {
			return false
		}
		pid = ppid
	}
	return false
}

func parentOf(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 2 {
		return 0, errors.New("malformed stat")
	}
	return strconv.Atoi(fields[1])
}

// outputs copies the generations' output, line by line with a prefix.
type outputs struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	files map[*os.File]bool
	lines sync.Mutex // one line at a time on every writer
}

// pipe returns the write end of a pipe whose lines go to w, each starting
// with prefix.
func (o *outputs) pipe(prefix []byte, w io.Writer) (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, os.NewSyscallError("pipe2", err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return -1, os.NewSyscallError("fcntl", err)
	}
	r := os.NewFile(uintptr(p[0]), "output")
	o.mu.Lock()
	if o.files == nil {
		o.files = map[*os.File]bool{}
	}
	o.files[r] = true
	o.mu.Unlock()
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.copyLines(r, prefix, w)
		o.mu.Lock()
		delete(o.files, r)
		o.mu.Unlock()
		r.Close()
	}()
	return p[1], nil
}

func (o *outputs) copyLines(r io.Reader, prefix []byte, w io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	line := make([]byte, 0, 256)
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			line = append(append(line[:0], prefix...), chunk...)
			if line[len(line)-1] != '\n' && err != bufio.ErrBufferFull {
				line = append(line, '\n') // the last line had no end
			}
			if err == bufio.ErrBufferFull {
				line = append(line, '\n') // a very long line, cut
			}
			o.lines.Lock()
			w.Write(line)
			o.lines.Unlock()
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// wait waits up to d for every copy to reach the end of its pipe (a
// process a generation left behind may hold one open), then stops them.
func (o *outputs) wait(d time.Duration) {
	done := make(chan struct{})
	go func() { o.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(d):
	}
	o.mu.Lock()
	for f := range o.files {
		f.Close()
	}
	o.mu.Unlock()
	<-done
}

// ExecShim turns this process into a generation's program when the
// supervisor started it as the shim that sets LISTEN_PID (see the package
// documentation): it does not return then, unless the program cannot be
// executed, and the caller must exit with the error. Otherwise it returns
// nil at once. A program that runs a Supervisor whose generations get
// LISTEN_FDS, and is its Config.Shim (by default, itself), calls it first
// thing in main:
//
//	if err := supervisor.ExecShim(); err != nil {
//		fmt.Fprintln(os.Stderr, err)
//		os.Exit(127)
//	}
func ExecShim() error {
	if os.Getenv(shimEnv) != "1" || len(os.Args) < 2 {
		return nil
	}
	os.Unsetenv(shimEnv)
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	return fmt.Errorf("supervisor: exec %s: %w", os.Args[1], err)
}
