//go:build linux

package harness

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for the zero values of Cmd and Control.
const (
	// DefaultTimeout bounds each read and write on a Control channel and
	// the reaping of a killed process.
	DefaultTimeout = 10 * time.Second
	// DefaultWaitDelay is how long reaping waits, after the process has
	// exited, for its output pipes to reach end of file (a grandchild may
	// still hold them) before it closes them.
	DefaultWaitDelay = 2 * time.Second
)

// Environment variables the harness sets in a child. Dispatch and
// ChildControl remove them from the child's environment before any user
// code runs, so they never leak into grandchildren.
const (
	// HelperEnv names the helper a re-executed test binary must run.
	HelperEnv = "GRACEFUL_HARNESS_HELPER"
	// ControlEnv holds the number of the child's control descriptor.
	ControlEnv = "GRACEFUL_HARNESS_CONTROL_FD"
)

// Errors of this package, returned wrapped with detail; test with
// errors.Is.
var (
	// ErrTimeout: a deadline passed (a control read or write, a wait).
	ErrTimeout = errors.New("harness: deadline passed")
	// ErrNoProgram: a Cmd names neither a Helper nor a Path.
	ErrNoProgram = errors.New("harness: no program to run")
	// ErrExited: the process has already been reaped.
	ErrExited = errors.New("harness: process already exited")
)

// Cmd describes a child process to start. Its zero value is not runnable:
// set Helper or Path.
type Cmd struct {
	// Helper names a function in the Helpers that the program dispatches
	// at startup (see Helpers.Dispatch). When set, Start runs Path, or the
	// current executable when Path is empty, and always opens a control
	// channel.
	Helper string

	// Path is the program to run, used as is (no $PATH search). Empty
	// means the current executable, which only makes sense with Helper.
	Path string

	// Args are the arguments after the program name. A helper sees them
	// as Child.Args.
	Args []string

	// Env is the child's whole environment, as "KEY=value" strings. Nil
	// means an empty one: the parent's environment is never inherited
	// behind the caller's back. The harness adds HelperEnv and ControlEnv
	// when it uses them.
	Env []string

	// Dir is the child's working directory; empty means the parent's.
	Dir string

	// ExtraFiles become descriptors 3, 4, ... of the child, in this order.
	// (As with any fork, descriptors of this process that are not
	// close-on-exec are inherited too; Dispatch closes them in a helper.)
	// Start takes each descriptor through SyscallConn, so, unlike os/exec
	// (which calls Fd), it never puts a shared open file description into
	// blocking mode. *os.File, *net.TCPListener, *net.UnixConn and the
	// like all qualify. The caller keeps them open across Start and closes
	// them afterwards.
	ExtraFiles []syscall.Conn

	// Control asks for a control channel for a program that is not a
	// helper. Its descriptor in the child comes right after ExtraFiles,
	// and its number is in ControlEnv (see ChildControl).
	Control bool

	// Credential, when not nil, runs the child as that user and group
	// (the parent must be allowed to switch to them, typically as root).
	// The program must be executable by that user: see CopyExecutable.
	Credential *syscall.Credential

	// Stdout and Stderr receive the child's output. Nil discards it.
	// Writes come from another goroutine.
	Stdout, Stderr io.Writer

	// WaitDelay bounds how long reaping waits for the output pipes after
	// the process has exited; 0 means DefaultWaitDelay.
	WaitDelay time.Duration
}

// Exit is how a process ended.
type Exit struct {
	// Code is the exit code, or -1 when a signal killed the process.
	Code int
	// Signal is the signal that killed the process, or 0.
	Signal syscall.Signal
}

// Success reports whether the process exited with code 0.
func (e Exit) Success() bool { return e.Code == 0 && e.Signal == 0 }

func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by signal " + e.Signal.String()
	}
	return "exit status " + strconv.Itoa(e.Code)
}

// Process is a started child. Every Process must be ended with Kill, which
// is safe to call at any time and more than once; the harnesstest package
// does it with DeferCleanup.
type Process struct {
	pid     int
	name    string
	control *Control
	done    chan struct{} // closed once reaped and its output drained

	mu     sync.Mutex // guards reaped against the group kill
	reaped bool
	exit   Exit
}

// Start starts the process c describes and a goroutine that reaps it.
func Start(c Cmd) (*Process, error) {
	path := c.Path
	if path == "" {
		if c.Helper == "" {
			return nil, ErrNoProgram
		}
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("harness: find the current executable: %w", err)
		}
		path = exe
	}
	name := c.Helper
	if name == "" {
		name = path
	}

	// Everything opened here is close-on-exec in this process, so that a
	// concurrent fork elsewhere cannot inherit it; ForkExec clears the
	// flag on the copies it installs in the child.
	var closeAfterStart []int
	var closeOnError []io.Closer
	fail := func(err error) (*Process, error) {
		for _, fd := range closeAfterStart {
			unix.Close(fd)
		}
		for _, c := range closeOnError {
			c.Close()
		}
		return nil, err
	}

	devNull, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(os.NewSyscallError("open "+os.DevNull, err))
	}
	closeAfterStart = append(closeAfterStart, devNull)
	files := []uintptr{uintptr(devNull)}

	var outputs []*os.File // read ends of the child's stdout and stderr
	for range 2 {
		r, wfd, err := outputPipe()
		if err != nil {
			return fail(err)
		}
		closeAfterStart = append(closeAfterStart, wfd)
		closeOnError = append(closeOnError, r)
		outputs = append(outputs, r)
		files = append(files, uintptr(wfd))
	}

	for i, f := range c.ExtraFiles {
		fd, err := RawFD(f)
		if err != nil {
			return fail(fmt.Errorf("harness: ExtraFiles[%d]: %w", i, err))
		}
		files = append(files, uintptr(fd))
	}

	env := slices.Clone(c.Env)
	if c.Helper != "" {
		env = append(env, HelperEnv+"="+c.Helper)
	}
	var control *Control
	if c.Helper != "" || c.Control {
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fail(os.NewSyscallError("socketpair", err))
		}
		closeAfterStart = append(closeAfterStart, pair[1])
		control, err = newControl(pair[0], "control of "+name)
		if err != nil {
			return fail(err)
		}
		closeOnError = append(closeOnError, control)
		env = append(env, ControlEnv+"="+strconv.Itoa(len(files)))
		files = append(files, uintptr(pair[1]))
	}

	attr := &syscall.ProcAttr{
		Dir:   c.Dir,
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			// Its own process group, so that Kill reaches grandchildren.
			Setpgid: true,
			// Best effort when this process dies without cleaning up.
			Pdeathsig:  syscall.SIGKILL,
			Credential: c.Credential,
		},
	}
	pid, err := syscall.ForkExec(path, append([]string{path}, c.Args...), attr)
	// The raw numbers taken above must stay valid until ForkExec returns.
	runtime.KeepAlive(c.ExtraFiles)
	if err != nil {
		return fail(fmt.Errorf("harness: start %s: %w", name, err))
	}
	for _, fd := range closeAfterStart {
		unix.Close(fd)
	}

	p := &Process{pid: pid, name: name, control: control, done: make(chan struct{})}
	delay := c.WaitDelay
	if delay <= 0 {
		delay = DefaultWaitDelay
	}
	var copying sync.WaitGroup
	for i, w := range []io.Writer{c.Stdout, c.Stderr} {
		if w == nil {
			w = io.Discard
		}
		copying.Add(1)
		go func(r *os.File) {
			defer copying.Done()
			io.Copy(w, r)
		}(outputs[i])
	}
	go p.reap(&copying, outputs, delay)
	return p, nil
}

// outputPipe returns a pipe whose read end is a pollable *os.File (so that
// closing it ends a pending Read) and whose write end is a raw descriptor
// for the child, in blocking mode as programs expect of their stdout.
func outputPipe() (*os.File, int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, os.NewSyscallError("pipe2", err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, -1, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(p[0]), "output pipe"), p[1], nil
}

// reap waits for the process to exit without reaping it (so that its pid,
// which is also its process group id, cannot be reused while Kill may still
// signal the group), then reaps it and drains its output.
func (p *Process) reap(copying *sync.WaitGroup, outputs []*os.File, delay time.Duration) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	var ws unix.WaitStatus
	p.mu.Lock()
	for {
		_, err := unix.Wait4(p.pid, &ws, 0, nil)
		if err != unix.EINTR {
			break
		}
	}
	p.reaped = true
	switch {
	case ws.Signaled():
		p.exit = Exit{Code: -1, Signal: ws.Signal()}
	default:
		p.exit = Exit{Code: ws.ExitStatus()}
	}
	p.mu.Unlock()

	drained := make(chan struct{})
	go func() {
		copying.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(delay):
		// A grandchild holds the pipes open: stop copying.
		for _, f := range outputs {
			f.Close()
		}
		<-drained
	}
	for _, f := range outputs {
		f.Close()
	}
	close(p.done)
}

// Pid is the process id.
func (p *Process) Pid() int { return p.pid }

// Name is the helper name, or the program path.
func (p *Process) Name() string { return p.name }

func (p *Process) String() string { return fmt.Sprintf("%s (pid %d)", p.name, p.pid) }

// Control is the parent's end of the control channel, or nil when the
// process has none.
func (p *Process) Control() *Control { return p.control }

// Done is closed once the process has exited, been reaped and its output
// copied.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit reports how the process ended, and false while it runs.
func (p *Process) Exit() (Exit, bool) {
	select {
	case <-p.done:
		return p.exit, true
	default:
		return Exit{}, false
	}
}

// Wait waits up to timeout for the process to end. It never kills it: on
// timeout the error wraps ErrTimeout and the process still runs.
func (p *Process) Wait(timeout time.Duration) (Exit, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exit, nil
	case <-t.C:
		return Exit{}, fmt.Errorf("%w: %v still running after %v", ErrTimeout, p, timeout)
	}
}

// Signal sends sig to the process (not its group). It returns an error
// wrapping ErrExited once the process has been reaped.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return fmt.Errorf("%w: %v", ErrExited, p)
	}
	return os.NewSyscallError("kill", unix.Kill(p.pid, sig))
}

// Kill sends SIGKILL to the process's group if the process has not been
// reaped yet, waits (up to DefaultTimeout) until it is reaped, and closes
// the control channel. It returns how the process ended. It is safe to
// call more than once, and after the process has exited by itself.
func (p *Process) Kill() (Exit, error) {
	p.mu.Lock()
	if !p.reaped {
		// The group id is the pid, still reserved: the leader has not
		// been reaped. ESRCH cannot happen for a zombie leader; any other
		// error is reported by the wait below not finishing.
		unix.Kill(-p.pid, unix.SIGKILL)
	}
	p.mu.Unlock()
	exit, err := p.Wait(DefaultTimeout)
	if p.control != nil {
		p.control.Close()
	}
	return exit, err
}

// CopyExecutable copies the current executable into dir (which it makes
// readable and searchable by everyone) as a file executable by everyone,
// and returns its path. A child started with a Credential of another user
// needs it: "go test" builds into a directory only its owner can enter.
func CopyExecutable(dir string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("harness: find the current executable: %w", err)
	}
	src, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer src.Close()
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, filepath.Base(exe))
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", err
	}
	return path, dst.Close()
}
