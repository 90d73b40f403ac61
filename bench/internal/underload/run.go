package underload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/bench/internal/harness"
)

// Schedule is one run: the load runs throughout, and the service is
// restarted Restarts times, one every Interval. With Restarts 0 the run
// lasts Baseline.
type Schedule struct {
	Restarts int
	Interval time.Duration
	Baseline time.Duration
}

func (s Schedule) duration() time.Duration {
	if s.Restarts == 0 {
		return s.Baseline
	}
	return time.Duration(s.Restarts+1) * s.Interval
}

// demoCommand starts this binary as role with a private stdin and a
// stdout to read lines from.
func demoCommand(role string, env ...string) (*exec.Cmd, io.WriteCloser, *lineReader, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append([]string{"GF_BENCH_ROLE=" + role, "PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, stdin, newLineReader(out), nil
}

// RunGraceful runs the graceful demo through s: every restart starts a
// new generation, which takes the listener from the running one.
func RunGraceful(s Schedule) (Result, error) {
	dir, err := os.MkdirTemp("", "gf")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")

	type generation struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
	}
	var gens []generation
	start := func(n int) (string, error) {
		cmd, stdin, lines, err := demoCommand(RoleGraceful, sockEnv+"="+sock, genEnv+"="+strconv.Itoa(n))
		if err != nil {
			return "", err
		}
		gens = append(gens, generation{cmd, stdin})
		l, err := lines.next(stepTimeout)
		if f := strings.Fields(l); err == nil && len(f) == 3 && f[0] == "serving" && f[1] == strconv.Itoa(n) {
			return f[2], nil
		}
		return "", fmt.Errorf("generation %d: %q, %v", n, l, err)
	}
	stopAll := func() error {
		var errs []error
		for i, g := range gens {
			g.stdin.Close()
			if err := waitTimeout(g.cmd, 2*stepTimeout); err != nil {
				errs = append(errs, fmt.Errorf("generation %d: %w", i, err))
			}
		}
		return errors.Join(errs...)
	}

	addr, err := start(0)
	if err != nil {
		return Result{}, errors.Join(err, stopAll())
	}
	res, err := underLoad(addr, s, func(int) (bool, error) {
		_, err := start(len(gens))
		return err == nil, err
	})
	return res, errors.Join(err, stopAll())
}

// RunTableflip runs a tableflip demo through s: every restart is a SIGHUP
// to the running generation, which upgrades. The calling process must be a
// child subreaper: generations outlive their parents.
func RunTableflip(s Schedule, drainer bool) (Result, error) {
	role := RoleTableflipShutdown
	if drainer {
		role = RoleTableflipDrainer
	}
	cmd, stdin, lines, err := demoCommand(role)
	if err != nil {
		return Result{}, err
	}
	pids := []int{}
	var mu sync.Mutex
	stop := func() error {
		stdin.Close() // every generation shares it
		errs := []error{waitTimeout(cmd, 2*stepTimeout)}
		mu.Lock()
		defer mu.Unlock()
		for _, pid := range pids[1:] {
			errs = append(errs, harness.Reap(pid, 2*stepTimeout))
		}
		return errors.Join(errs...)
	}
	serving := func() (int, string, bool, error) {
		l, err := lines.next(stepTimeout)
		f := strings.Fields(l)
		switch {
		case err != nil:
			return 0, "", false, err
		case len(f) == 3 && f[0] == "serving":
			pid, err := strconv.Atoi(f[1])
			mu.Lock()
			pids = append(pids, pid)
			mu.Unlock()
			return pid, f[2], true, err
		case len(f) >= 2 && f[0] == "refused":
			return 0, "", false, nil
		}
		return 0, "", false, fmt.Errorf("unexpected line %q", l)
	}
	current, addr, ok, err := serving()
	if err != nil || !ok {
		return Result{}, errors.Join(fmt.Errorf("first generation: %v", err), stop())
	}
	res, err := underLoad(addr, s, func(int) (bool, error) {
		if err := syscall.Kill(current, syscall.SIGHUP); err != nil {
			return false, err
		}
		pid, _, ok, err := serving()
		if ok {
			current = pid
		}
		return ok, err
	})
	return res, errors.Join(err, stop())
}

// underLoad runs the load against addr for s, calling restart once per
// interval. restart reports whether the hand-off happened; an error ends
// the run.
func underLoad(addr string, s Schedule, restart func(int) (bool, error)) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.duration()+stepTimeout)
	defer cancel()
	loaded := make(chan Result, 1)
	go func() { loaded <- Load(ctx, addr) }()
	done, refused := 0, 0
	var err error
	tick := time.NewTicker(s.Interval)
	if s.Restarts == 0 {
		<-time.After(s.Baseline) // the load runs meanwhile
	}
	for i := 0; i < s.Restarts && err == nil; i++ {
		<-tick.C
		var ok bool
		if ok, err = restart(i); ok {
			done++
		} else if err == nil {
			refused++
		}
	}
	if s.Restarts > 0 {
		<-tick.C // the last hand-off's drain happens under load too
	}
	tick.Stop()
	cancel()
	res := <-loaded
	res.Restarts, res.Refused = done, refused
	return res, err
}

func waitTimeout(cmd *exec.Cmd, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("did not exit within %v (killed)", timeout)
	}
}
