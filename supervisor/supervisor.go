//go:build linux

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for the zero values of Config.
const (
	// DefaultReadyTimeout bounds the wait for a new generation's READY=1.
	DefaultReadyTimeout = 30 * time.Second
	// DefaultStopTimeout is how long a generation may take to exit after
	// its stop signal before it is killed with its process group.
	DefaultStopTimeout = 30 * time.Second
	// DefaultMinBackoff is the wait before the second restart of a crash
	// loop (the first is immediate).
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the wait between restarts of a crash loop.
	DefaultMaxBackoff = 30 * time.Second
	// DefaultFdStoreMax is how many descriptors the store keeps.
	DefaultFdStoreMax = 64
)

// Errors of the supervisor, returned wrapped with detail: test them with
// errors.Is.
var (
	// ErrRestartFailed means the new generation did not take over: it
	// exited, was not ready in time, or could not be started. It was
	// killed; the message says whether the previous generation serves on.
	ErrRestartFailed = errors.New("supervisor: restart failed")
	// ErrNotServing means a restart was refused because no generation
	// serves yet (the first one, or the one after a crash, is starting).
	ErrNotServing = errors.New("supervisor: no generation is serving yet")
	// ErrStopping means the supervisor is stopping or has stopped.
	ErrStopping = errors.New("supervisor: stopping")
	// ErrUnauthorized means the control socket's peer runs as another
	// user.
	ErrUnauthorized = errors.New("supervisor: peer not authorised")
)

// Config is how a Supervisor runs its service. Path is required; every
// other zero value means the documented default.
type Config struct {
	// Path is the program every generation runs. A name without a slash
	// is looked up in PATH.
	Path string
	// Args are the program's arguments, after its name.
	Args []string
	// Env is the environment of every generation; nil means this
	// process's. Either way NOTIFY_SOCKET is set to the supervisor's
	// socket, and LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID are set
	// (while the store holds descriptors and Handoff is empty) or
	// removed.
	Env []string
	// Dir is the supervisor's runtime directory, for notify.sock and
	// control.sock. It is created 0700 if missing, and must belong to
	// this user and be closed to others. Empty means a fresh temporary
	// directory, removed when Run returns.
	Dir string
	// Handoff, when set, is the path of the service's graceful hand-off
	// socket: while no generation serves, the supervisor serves its store
	// there, and no generation gets LISTEN_FDS. Empty means that stored
	// descriptors reach generations by socket activation (LISTEN_FDS).
	Handoff string
	// Shim is the executable that sets LISTEN_PID for a generation that
	// gets LISTEN_FDS: a program that calls ExecShim first thing in main.
	// Empty means this process's executable.
	Shim string
	// Store holds descriptors to start the store with, each named by its
	// Name() (for example from the supervisor's own socket activation).
	// The supervisor keeps duplicates; the caller closes these.
	Store []*os.File
	// ReadyTimeout bounds the wait for a new generation's READY=1; zero
	// means DefaultReadyTimeout. EXTEND_TIMEOUT_USEC= from the generation
	// extends it.
	ReadyTimeout time.Duration
	// StopTimeout is how long a generation may take to exit after its stop
	// signal; zero means DefaultStopTimeout.
	StopTimeout time.Duration
	// StopSignal is sent to a generation that has handed over; zero means
	// SIGTERM.
	StopSignal syscall.Signal
	// MinBackoff and MaxBackoff bound the waits between restarts of a
	// crash loop; zero means DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// FdStoreMax is how many descriptors the store keeps; zero means
	// DefaultFdStoreMax, a negative value turns the store off.
	FdStoreMax int
	// ReapOrphans makes Run reap every child of this process, not only the
	// generations, and make this process a child subreaper, so that what a
	// generation leaves behind is reaped. It is forced on for PID 1. Do not
	// set it in a program that waits for children of its own (os/exec):
	// their exit status would be taken.
	ReapOrphans bool
	// Upstream makes the supervisor a Type=notify service of the manager
	// at this process's NOTIFY_SOCKET (systemd): it relays readiness,
	// reloads, stopping, status and stored descriptors.
	Upstream bool
	// Stdout and Stderr receive the generations' output, each line
	// prefixed with "[gen N] "; nil discards it. Writes are whole lines,
	// from other goroutines, one at a time.
	Stdout, Stderr io.Writer
	// Logger receives the supervisor's own messages, for people; nil
	// means none. Programs follow Events instead: the messages may change.
	Logger *slog.Logger
	// Events, when set, is called with every Event (see the package
	// documentation), in order and one at a time, on a goroutine of the
	// supervisor's that does nothing else: the supervisor never waits for
	// it, and it may call the Supervisor's methods (Status, Restart,
	// Stop). Events that happen meanwhile wait for it in memory, without
	// bound: it should return promptly. Run returns after it has returned
	// for the last event.
	Events func(Event)
	// Spare keeps the next generation started in advance while one
	// serves, waiting in graceful.Receive or Dial (graceful.AwaitTurn)
	// until its turn comes, so that after a crash the program is already
	// running: the recovery is a hand-off, without the start of a
	// process. It costs an idle process. It needs Handoff, and a program
	// that takes over before anything another instance must not do at
	// the same time (bind a port of its own, write a pid file): code
	// before that runs in the spare too, while the serving generation
	// serves. A restart dismisses the spare and starts the program afresh.
	// A program that does not wait (neither graceful's Go Receive, Dial or
	// AwaitTurn nor an implementation that honours graceful.SpareEnv)
	// takes over from the serving generation as a restart would; the
	// supervisor then treats it as one and starts no more spares.
	Spare bool
}

// Generation describes one generation.
type Generation struct {
	// N counts generations from 1.
	N int `json:"n"`
	// PID is the process the supervisor started; MainPID the one it
	// watches and signals (PID unless the generation said MAINPID=).
	PID     int `json:"pid"`
	MainPID int `json:"main_pid"`
	// State is "spare" (Config.Spare), "starting", "serving", "retiring"
	// or "failed".
	State string `json:"state"`
	// Status is the generation's last STATUS= text.
	Status string `json:"status,omitempty"`
	// Started is when it was started, Ready when it first said READY=1.
	Started time.Time `json:"started"`
	Ready   time.Time `json:"ready,omitzero"`
}

// Status is a snapshot of a running supervisor.
type Status struct {
	// Serving is the generation that serves, if any; Starting the one
	// being started (a restart, or a start after a crash); Retiring those
	// that handed over and are draining.
	Serving  *Generation  `json:"serving,omitempty"`
	Starting *Generation  `json:"starting,omitempty"`
	Retiring []Generation `json:"retiring,omitempty"`
	// Spare is the spare started in advance (Config.Spare), if any;
	// SpareWaiting is true once it waits in graceful.Receive.
	Spare        *Generation `json:"spare,omitempty"`
	SpareWaiting bool        `json:"spare_waiting,omitempty"`
	// Stored names the descriptors in the store, in order.
	Stored []string `json:"stored"`
	// Standby is true while the supervisor's own hand-off socket is bound
	// in advance (with Config.Handoff, while the store holds descriptors),
	// so that after a crash it is placed at the path by a rename rather
	// than bound then.
	Standby bool `json:"standby"`
	// Restarts counts restarts that took over, Failed those that did not,
	// Crashes the serving generations that died on their own, Orphans the
	// other processes reaped.
	Restarts int `json:"restarts"`
	Failed   int `json:"failed"`
	Crashes  int `json:"crashes"`
	Orphans  int `json:"orphans"`
	// Stopping is true once Stop was called.
	Stopping bool `json:"stopping"`
}

// Exit is how the serving generation ended when the supervisor stopped.
type Exit struct {
	// Gen is the generation, 0 when none was serving.
	Gen int
	// Code is its exit code, or -1 when a signal ended it, or when the
	// status is unknown (Signal is 0 then): a main process named with
	// MAINPID= is not the supervisor's child, and only its end is seen.
	Code int
	// Signal is the signal that ended it, or 0.
	Signal syscall.Signal
}

// ExitCode is the status a shell would report: Code, or 128 plus the
// signal's number.
func (e Exit) ExitCode() int {
	if e.Signal != 0 {
		return 128 + int(e.Signal)
	}
	return e.Code
}

func (e Exit) String() string {
	if e.Signal != 0 {
		return "killed by signal " + e.Signal.String()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Supervisor runs the generations of one service. Create it with New, run
// it once with Run; its other methods may be called from any goroutine
// while Run runs. All its state belongs to Run's goroutine: the methods
// send it requests.
type Supervisor struct {
	cfg     Config
	log     *slog.Logger
	dir     string
	tempDir bool
	notify  *notifySocket
	control *controlServer
	store   *storeServer // nil when the store is off

	ops   chan func()   // requests, run by Run's goroutine
	exits chan procExit // from the reaper and the watchers
	notes chan note     // from the notify socket
	quit  chan struct{} // closed when Run returns
	ran   sync.Once

	outputs outputs // the copies of the generations' output
	events  *events // to Config.Events

	st state // owned by Run's goroutine
}

// New checks cfg, prepares the runtime directory and its sockets, and
// returns a supervisor; no generation runs before Run.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Path == "" {
		return nil, errors.New("supervisor: Config.Path is empty")
	}
	if !strings.Contains(cfg.Path, "/") {
		p, err := exec.LookPath(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("supervisor: %w", err)
		}
		cfg.Path = p
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.FdStoreMax == 0 {
		cfg.FdStoreMax = DefaultFdStoreMax
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	if os.Getpid() == 1 {
		cfg.ReapOrphans = true
	}
	if cfg.Spare && cfg.Handoff == "" {
		return nil, errors.New("supervisor: Config.Spare needs Config.Handoff: a spare takes the store over the graceful protocol")
	}
	if cfg.Shim == "" && cfg.Handoff == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("supervisor: find the shim: %w", err)
		}
		cfg.Shim = exe
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	s := &Supervisor{
		cfg: cfg, log: log,
		ops:    make(chan func()),
		exits:  make(chan procExit, 16),
		notes:  make(chan note, 16),
		quit:   make(chan struct{}),
		events: newEvents(cfg.Events),
	}
	var err error
	if s.dir, s.tempDir, err = privateDir(cfg.Dir); err != nil {
		return nil, err
	}
	fail := func(err error) (*Supervisor, error) {
		s.closeSockets()
		return nil, err
	}
	if s.control, err = listenControl(filepath.Join(s.dir, "control.sock")); err != nil {
		return fail(err)
	}
	if s.notify, err = listenNotify(filepath.Join(s.dir, "notify.sock")); err != nil {
		return fail(err)
	}
	if cfg.FdStoreMax > 0 {
		if s.store, err = listenStore(filepath.Join(s.dir, "store.sock")); err != nil {
			return fail(err)
		}
	}
	s.st.init(s)
	for _, f := range cfg.Store {
		fd, err := dupCloexec(f)
		if err != nil {
			s.st.store.closeAll()
			return fail(fmt.Errorf("supervisor: Config.Store: %w", err))
		}
		s.st.store.add(f.Name(), []int{fd}, s.cfg.FdStoreMax, s.log)
	}
	return s, nil
}

// Dir is the runtime directory, where control.sock, notify.sock and
// store.sock are.
func (s *Supervisor) Dir() string { return s.dir }

// Run starts the first generation and supervises the service until ctx
// ends (which stops it like Stop(SIGTERM)) or Stop is called, and every
// generation has exited. It returns how the generation that was serving
// at the stop ended, once Config.Events has had the last event. An error
// means the service could not run at all: the first generation could not
// be started. Run may be called once.
func (s *Supervisor) Run(ctx context.Context) (Exit, error) {
	first := false
	s.ran.Do(func() { first = true })
	if !first {
		return Exit{}, errors.New("supervisor: Run called twice")
	}
	go s.events.run()
	defer s.cleanup()

	if s.cfg.ReapOrphans && os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			s.log.Warn("cannot become a child subreaper: orphans will not be reaped here", "err", err)
		}
	}
	stopReaper := s.startReaper()
	defer stopReaper()
	go s.notify.serve(s.notes, s.quit)
	go s.control.serve(s)
	if s.store != nil {
		s.store.start(s)
	}

	if err := s.st.startFirst(); err != nil {
		return Exit{}, err
	}
	done := ctx.Done()
	for !s.st.finished() {
		select {
		case op := <-s.ops:
			op()
		case e := <-s.exits:
			s.st.exited(e)
		case n := <-s.notes:
			s.st.notified(n)
		case <-done:
			done = nil
			s.st.stop(syscall.SIGTERM)
		}
	}
	return s.st.exit, nil
}

// do runs op on Run's goroutine and waits for it; it reports false when
// Run is not running (not yet, or any more).
func (s *Supervisor) do(op func()) bool {
	ran := make(chan struct{})
	select {
	case s.ops <- func() { op(); close(ran) }:
		<-ran
		return true
	case <-s.quit:
		return false
	}
}

// post runs op on Run's goroutine later, unless Run has returned. It never
// blocks its caller (a timer).
func (s *Supervisor) post(op func()) {
	go func() {
		select {
		case s.ops <- op:
		case <-s.quit:
		}
	}()
}

// Restart starts the next generation and waits until it serves or the
// restart failed; it returns the generation that took over. A restart in
// progress is waited for first (see the package documentation). The error
// matches ErrRestartFailed, ErrNotServing or ErrStopping, or is ctx's: the
// restart goes on when ctx ends, only the wait stops.
func (s *Supervisor) Restart(ctx context.Context) (Generation, error) {
	res := make(chan restartResult, 1)
	if !s.do(func() { s.st.requestRestart(res) }) {
		return Generation{}, fmt.Errorf("%w: not running", ErrStopping)
	}
	select {
	case r := <-res:
		return r.gen, r.err
	case <-ctx.Done():
		return Generation{}, ctx.Err()
	case <-s.quit:
		return Generation{}, fmt.Errorf("%w: stopped", ErrStopping)
	}
}

// Stop stops the service: sig (SIGTERM or SIGINT, typically the one the
// supervisor received) goes to the serving generation, starting ones are
// killed, retiring ones are signalled too; each is killed with its process
// group when it is still there after StopTimeout. Run returns once all have
// exited. Calling Stop again sends sig again.
func (s *Supervisor) Stop(sig syscall.Signal) {
	s.do(func() { s.st.stop(sig) })
}

// Signal forwards sig to the serving generation's main process. It reports
// false when no generation serves.
func (s *Supervisor) Signal(sig syscall.Signal) bool {
	sent := false
	s.do(func() { sent = s.st.forward(sig) })
	return sent
}

// Status returns a snapshot of the supervisor's state; ok is false when
// Run is not running.
func (s *Supervisor) Status() (st Status, ok bool) {
	ok = s.do(func() { st = s.st.status() })
	return st, ok
}

// cleanup releases what New and Run set up, once Run is over.
func (s *Supervisor) cleanup() {
	close(s.quit)
	s.st.store.closeAll()
	s.st.closeHandoff()
	s.st.closeStandby()
	s.st.dropLaunch()
	s.outputs.wait(2 * time.Second)
	s.closeSockets()
	s.events.close() // after quit: a callback's calls return at once
}

func (s *Supervisor) closeSockets() {
	if s.control != nil {
		s.control.close()
	}
	if s.store != nil {
		s.store.close()
	}
	if s.notify != nil {
		s.notify.close()
	}
	if s.tempDir {
		os.RemoveAll(s.dir)
	}
}

// privateDir returns dir, created 0700 if missing, after checking that it
// belongs to this user and is closed to others; an empty dir is a fresh
// temporary directory (temp reports it).
func privateDir(dir string) (_ string, temp bool, err error) {
	if dir == "" {
		dir, err = os.MkdirTemp("", "graceful-supervisor-")
		if err != nil {
			return "", false, fmt.Errorf("supervisor: %w", err)
		}
		return dir, true, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("supervisor: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", false, fmt.Errorf("supervisor: %w", &os.PathError{Op: "lstat", Path: dir, Err: err})
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return "", false, fmt.Errorf("supervisor: %s is not a directory", dir)
	case int(st.Uid) != os.Geteuid():
		return "", false, fmt.Errorf("supervisor: %s belongs to uid %d, not to this user (%d)", dir, st.Uid, os.Geteuid())
	case st.Mode&0o077 != 0:
		return "", false, fmt.Errorf("supervisor: %s is open to others (mode %#o): make it 0700", dir, st.Mode&0o777)
	}
	return dir, false, nil
}

// dupCloexec duplicates f's descriptor, close-on-exec, without Fd (which
// could change its blocking mode).
func dupCloexec(f syscall.Conn) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return dup, nil
}
