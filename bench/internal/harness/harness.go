// Package harness starts the benchmarks' peer processes. A benchmark binary
// re-executes itself as the peer: its TestMain calls Main, which runs the
// role named in the environment instead of the benchmarks. Every child
// lives until its parent closes its standard input (or its socket), so
// none outlives the benchmark that started it.
package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// roleEnv names the role a child process plays.
const roleEnv = "GF_BENCH_ROLE"

// StopTimeout bounds the wait for a child to exit once told to.
const StopTimeout = 10 * time.Second

// Main runs the role named by the environment, if any, and exits;
// otherwise it runs the tests and benchmarks.
func Main(m *testing.M, roles map[string]func() error) {
	name := os.Getenv(roleEnv)
	if name == "" {
		os.Exit(m.Run())
	}
	role, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "harness: unknown role %q\n", name)
		os.Exit(2)
	}
	if err := role(); err != nil {
		fmt.Fprintf(os.Stderr, "harness: role %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Child is a running peer process.
type Child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	done   chan error
}

// Start runs this binary as role, with env added to a minimal environment
// and files as descriptors 3, 4, ... The parent's copies of files are
// closed once the child has them. The child is stopped when tb ends.
func Start(tb testing.TB, role string, env []string, files ...*os.File) *Child {
	tb.Helper()
	c, err := startCommand(role, env, files...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("child %s: %v", role, err)
		}
	})
	return c
}

func startCommand(role string, env []string, files ...*os.File) (*Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &Child{cmd: exec.Command(exe), done: make(chan error, 1)}
	c.cmd.Env = append([]string{roleEnv + "=" + role, "PATH=" + os.Getenv("PATH")}, env...)
	c.cmd.ExtraFiles = files
	c.cmd.Stderr = &c.stderr
	c.cmd.Stdout = &c.stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	err = c.cmd.Start()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return nil, err
	}
	go func() { c.done <- c.cmd.Wait() }()
	return c, nil
}

// Stop tells the child to exit by closing its standard input and waits
// for it, killing it after StopTimeout.
func (c *Child) Stop() error {
	c.stdin.Close()
	select {
	case err := <-c.done:
		c.done <- err
		if err != nil {
			return fmt.Errorf("%w; output: %s", err, c.stderr.String())
		}
		return nil
	case <-time.After(StopTimeout):
		c.cmd.Process.Kill()
		err := <-c.done
		c.done <- err
		return fmt.Errorf("did not exit within %v (killed); output: %s", StopTimeout, c.stderr.String())
	}
}

// ExitWhenStdinCloses makes a child process exit as soon as its parent
// closes the child's standard input: for roles that serve until told to
// stop.
func ExitWhenStdinCloses() {
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
}

// EnvInt reads an integer from the environment.
func EnvInt(name string) (int, error) {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		return 0, fmt.Errorf("environment %s: %w", name, err)
	}
	return n, nil
}

// Socketpair returns a connected pair of blocking, close-on-exec unix
// stream sockets as files.
func Socketpair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "pair0"), os.NewFile(uintptr(fds[1]), "pair1"), nil
}

// OpenFds counts this process's open descriptors.
func OpenFds() (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	return len(entries) - 1, nil // minus the directory being read
}

// CheckNoLeak fails tb if the process holds more descriptors at the end
// of tb than it did when CheckNoLeak was called.
func CheckNoLeak(tb testing.TB) {
	tb.Helper()
	startPoller.Do(func() {
		// The runtime's poller opens its own descriptors on first use:
		// open them before the first count.
		if r, w, err := os.Pipe(); err == nil {
			r.Close()
			w.Close()
		}
	})
	before, err := OpenFds()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// Descriptors are closed by the cleanups registered after this
		// one, which run first.
		after, err := OpenFds()
		if err != nil {
			tb.Error(err)
			return
		}
		if after > before {
			tb.Errorf("%d descriptors open after the benchmark, %d before", after, before)
		}
	})
}

var startPoller sync.Once

// ErrShort means a peer handed over fewer descriptors than asked.
var ErrShort = errors.New("harness: fewer descriptors than requested")

// Reap waits for the process pid, a child or an adopted orphan (see
// SetSubreaper), to exit, and kills it after timeout. It fails unless the
// process exited with status 0.
func Reap(pid int, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				done <- os.NewSyscallError("wait4", err)
			case !ws.Exited() || ws.ExitStatus() != 0:
				done <- fmt.Errorf("pid %d ended with %v", pid, ws)
			default:
				done <- nil
			}
			return
		}
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		unix.Kill(pid, unix.SIGKILL)
		<-done
		return fmt.Errorf("pid %d did not exit within %v (killed)", pid, timeout)
	}
}

// SetSubreaper makes this process adopt its orphaned descendants, so that
// it can reap processes that outlive their parents (tableflip's
// generations do).
func SetSubreaper() error {
	return os.NewSyscallError("prctl", unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
}
