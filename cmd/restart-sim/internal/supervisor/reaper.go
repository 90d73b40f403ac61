//go:build linux

package supervisor

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper reaps children this process did not start itself: processes
// orphaned by a generation, which the kernel hands to PID 1 in a container,
// or to this process anywhere else once it is a child subreaper. Children
// it is told about (the generations, which the harness reaps) are left
// alone.
type Reaper struct {
	mu      sync.Mutex
	managed map[int]bool
	reaped  int
	stop    chan struct{}
	done    chan struct{}
}

// StartReaper makes this process a child subreaper and reaps orphans on
// every SIGCHLD, and every second in case a signal was merged, until Stop.
func StartReaper() *Reaper {
	r := &Reaper{managed: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		defer close(r.done)
		defer signal.Stop(sigs)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				r.reap()
				return
			case <-sigs:
			case <-tick.C:
			}
			r.reap()
		}
	}()
	return r
}

// Manage runs start, which starts a child and returns its pid (0 on
// failure), and tells the reaper that the child is reaped by someone else.
// The reaper cannot look at the child before it knows. A nil Reaper only
// runs start.
func (r *Reaper) Manage(start func() int) {
	if r == nil {
		start()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if pid := start(); pid > 0 {
		r.managed[pid] = true
	}
}

// Release forgets pid, once it has been reaped by whoever managed it.
func (r *Reaper) Release(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.managed, pid)
	r.mu.Unlock()
}

// Reaped is the number of orphans reaped so far.
func (r *Reaper) Reaped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped
}

// Stop reaps a last time and stops the reaper.
func (r *Reaper) Stop() {
	close(r.stop)
	<-r.done
}

// reap waits, without blocking, for every child that is not managed. The
// children are listed from /proc, so that a managed child is never waited
// for by mistake (wait4(-1) would take it from the harness).
func (r *Reaper) reap() {
	for _, pid := range children() {
		r.mu.Lock()
		managed := r.managed[pid]
		r.mu.Unlock()
		if managed {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			r.mu.Lock()
			r.reaped++
			r.mu.Unlock()
		}
	}
}

// children lists this process's children, from every thread's
// /proc/self/task/<tid>/children.
func children() []int {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
