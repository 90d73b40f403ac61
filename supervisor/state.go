//go:build linux

package supervisor

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// Roles of a generation.
const (
	starting = "starting"
	serving  = "serving"
	retiring = "retiring"
	spare    = "spare"
	failed   = "failed"
)

// gen is one generation, as Run's goroutine sees it.
type gen struct {
	Generation
	proc     *process
	mainFd   int  // pidfd of MainPID when it is not PID, or -1
	procDone bool // PID has been reaped
	restart  bool // started by a restart
	// handoffAnswers: g, serving, has been seen answering at the hand-off
	// socket (watchHandoff).
	handoffAnswers bool
	turn           *net.UnixConn // a spare's end of graceful.SpareEnv, until its turn comes
	spareWaiting   bool          // the spare said it waits
	waiters        []chan restartResult
	timer          interface{ Stop() bool } // ready deadline, then stop deadline
}

type restartResult struct {
	gen Generation
	err error
}

// state is everything Run's goroutine owns.
type state struct {
	s        *Supervisor
	next     int
	gens     map[int]*gen // every generation whose main process still runs
	serving  *gen
	starting *gen
	pending  []chan restartResult // restarts asked for during a restart, or before the hand-off socket answered
	// handoffWait, while set, probes the serving generation's hand-off
	// socket until it answers, for the restarts pending; they fail at
	// handoffGiveUp.
	handoffWait    interface{ Stop() bool }
	handoffGiveUp  time.Time
	store          store
	handoff        *handoffServer
	standby        *net.UnixListener // see standby.go
	noStandby      bool              // a rename cannot place one
	standbyBinding bool              // one is on its way
	nextLaunch     *launch           // made in advance for generation next+1
	spare          *gen              // see spare.go
	noSpare        bool              // a spare took over unasked: the program cannot be one

	crashes  int // consecutive failures, for the backoff
	backoff  interface{ Stop() bool }
	stopping bool
	stopGen  *gen // serving when Stop came
	exit     Exit
	upReady  bool // READY=1 sent upstream

	restarts, failedRestarts, crashCount, orphans int
}

func (st *state) init(s *Supervisor) {
	st.s = s
	st.gens = map[int]*gen{}
}

// finished reports whether Run may return: stopping and nothing left.
func (st *state) finished() bool { return st.stopping && len(st.gens) == 0 }

func (st *state) startFirst() error {
	g, err := st.spawn()
	if err != nil {
		st.emit(Event{Kind: EventStartFailed, Gen: st.unstarted(), Err: err})
		return fmt.Errorf("supervisor: cannot start %w", err)
	}
	st.starting = g
	return nil
}

// spawn starts the next generation with its ready deadline.
func (st *state) spawn() (*gen, error) {
	s := st.s
	if s.cfg.Handoff != "" && st.serving == nil {
		st.openHandoff()
	}
	var fds []int
	var names []string
	if s.cfg.Handoff == "" {
		fds, names = st.store.list()
	}
	g := &gen{Generation: Generation{State: starting}, mainFd: -1}
	if err := st.launchGen(g, fds, names, -1); err != nil {
		return nil, err
	}
	s.log.Info("generation started", "gen", g.N, "pid", g.PID, "fds", len(fds))
	st.emit(Event{Kind: EventStarted, Time: g.Started, Gen: g.Generation})
	st.armReadyTimer(g)
	return g, nil
}

// launchGen gives g the next number and starts its process (see
// startProcess), and records it among the generations.
func (st *state) launchGen(g *gen, fds []int, names []string, turn int) error {
	g.N = st.next + 1
	l, err := st.takeLaunch(g.N)
	if err == nil {
		g.proc, err = startProcess(st.s, l, fds, names, turn)
		l.close()
	}
	if err != nil {
		return fmt.Errorf("generation %d: %w", g.N, err)
	}
	st.next = g.N
	g.PID, g.MainPID, g.Started = g.proc.pid, g.proc.pid, time.Now()
	st.gens[g.N] = g
	return nil
}

// armReadyTimer fails g if it is not ready within ReadyTimeout.
func (st *state) armReadyTimer(g *gen) {
	s := st.s
	g.timer = time.AfterFunc(s.cfg.ReadyTimeout, func() {
		s.post(func() { st.readyTimeout(g, s.cfg.ReadyTimeout) })
	})
}

// unstarted is the generation spawn could not start, for its event: its
// number goes to the next one started.
func (st *state) unstarted() Generation {
	return Generation{N: st.next + 1, State: failed}
}

// emit hands e to Config.Events; it never blocks.
func (st *state) emit(e Event) { st.s.events.emit(e) }

func (st *state) readyTimeout(g *gen, d time.Duration) {
	if g != st.starting || g.State != starting {
		return
	}
	st.startFailed(g, fmt.Errorf("generation %d was not ready within %v", g.N, d))
}

// requestRestart starts a restart, queues it behind the one in progress,
// or refuses it.
func (st *state) requestRestart(res chan restartResult) {
	switch {
	case st.stopping:
		res <- restartResult{err: fmt.Errorf("%w: no restart", ErrStopping)}
	case st.starting != nil && st.serving != nil:
		st.pending = append(st.pending, res)
		st.s.log.Info("restart queued behind the one in progress", "starting", st.starting.N)
	case st.serving == nil:
		msg := "the first generation is starting"
		switch {
		case st.starting != nil && st.starting.N > 1:
			msg = fmt.Sprintf("generation %d is starting after a crash", st.starting.N)
		case st.starting == nil:
			msg = "the next generation waits to start after a crash"
		}
		res <- restartResult{err: fmt.Errorf("%w: %s; try again once it is ready", ErrNotServing, msg)}
	default:
		st.restartWhenHandoffAnswers([]chan restartResult{res})
	}
}

// handoffServed reports, with nil, whether the serving generation (as far
// as one can tell) answers at the hand-off socket: nobody there, or a
// retiring generation that has not let go of the path yet, is an error.
// An empty path has nothing to wait for.
func (st *state) handoffServed() error {
	path := st.s.cfg.Handoff
	if path == "" {
		return nil
	}
	if st.serving != nil && st.serving.handoffAnswers {
		return nil
	}
	pid, err := answeringPID(path)
	if err == unix.ECONNREFUSED || err == unix.ENOENT {
		return os.NewSyscallError("connect", err)
	}
	if err != nil || pid <= 0 {
		return nil // a full backlog, or a peer we cannot name: not ours to judge
	}
	return st.answeredBy(pid)
}

// answeredBy reports, with nil, whether pid, which answers at the hand-off
// socket, may be the serving generation's: it is no other generation's.
func (st *state) answeredBy(pid int) error {
	for _, g := range st.gens {
		if g != st.serving && (pid == g.PID || pid == g.MainPID) {
			return fmt.Errorf("generation %d (%s) still answers there", g.N, g.State)
		}
	}
	return nil
}

// answeringPID connects to the unix socket at path without waiting, and
// returns the pid of the process that listens there (SO_PEERCRED), or the
// kernel's answer when it cannot.
func answeringPID(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, err
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, err
	}
	return int(cred.Pid), nil
}

// watchHandoff probes the hand-off socket of g, which has just become
// ready, until g answers there or ReadyTimeout passes, and records on
// Run's goroutine that it does: a restart of g need not probe again (see
// restartWhenHandoffAnswers). A predecessor that has not let go of the
// path yet answers there too, for a while.
func (st *state) watchHandoff(g *gen) {
	s := st.s
	path := s.cfg.Handoff
	if path == "" {
		return
	}
	pids := []int{g.PID, g.MainPID}
	go func() {
		deadline := time.Now().Add(s.cfg.ReadyTimeout)
		tick := time.NewTicker(handoffProbeEvery)
		defer tick.Stop()
		for {
			if pid, err := answeringPID(path); err == nil && slices.Contains(pids, pid) {
				s.post(func() {
					if st.serving == g && st.answeredBy(pid) == nil {
						g.handoffAnswers = true
					}
				})
				return
			}
			if time.Now().After(deadline) {
				return
			}
			select {
			case <-tick.C:
			case <-s.quit:
				return
			}
		}
	}()
}

// handoffProbeEvery is how often a restart waiting for the serving
// generation's hand-off socket asks again.
const handoffProbeEvery = 5 * time.Millisecond

// restartWhenHandoffAnswers begins the restart for waiters, unless the
// serving generation's hand-off socket does not answer yet (a generation
// may say READY=1 before it has the path: its predecessor held it). Its
// successor would find no server there and start without the set, so the
// restart waits, up to ReadyTimeout, for the socket to answer.
func (st *state) restartWhenHandoffAnswers(waiters []chan restartResult) {
	path := st.s.cfg.Handoff
	err := st.handoffServed()
	if err == nil {
		if st.handoffWait != nil {
			st.handoffWait.Stop()
			st.handoffWait = nil
		}
		waiters = append(st.pending, waiters...)
		st.pending = nil
		st.beginRestart(waiters)
		return
	}
	st.pending = append(waiters, st.pending...)
	if st.handoffWait != nil {
		return
	}
	if st.handoffGiveUp.IsZero() {
		st.handoffGiveUp = time.Now().Add(st.s.cfg.ReadyTimeout)
		st.s.log.Info("restart waits for the serving generation's hand-off socket", "gen", st.serving.N, "path", path, "err", err)
	}
	if time.Now().After(st.handoffGiveUp) {
		st.handoffGiveUp = time.Time{}
		pending := st.pending
		st.pending = nil
		err := fmt.Errorf("%w: generation %d's hand-off socket %s did not answer within %v: %w; it serves on",
			ErrRestartFailed, st.serving.N, path, st.s.cfg.ReadyTimeout, err)
		st.failedRestarts++
		st.s.log.Error("restart failed", "err", err)
		st.emit(Event{Kind: EventRestartFailed, Gen: st.unstarted(), Err: err})
		for _, w := range pending {
			w <- restartResult{err: err}
		}
		return
	}
	st.handoffWait = time.AfterFunc(handoffProbeEvery, func() {
		st.s.post(func() {
			st.handoffWait = nil
			st.runPending()
		})
	})
}

func (st *state) beginRestart(waiters []chan restartResult) {
	st.handoffGiveUp = time.Time{}
	st.dropSpare()
	st.emit(Event{Kind: EventRestartRequested, Gen: st.serving.Generation})
	st.upstream(graceful.NotifyReloading(), graceful.NotifyStatus(fmt.Sprintf("restarting: generation %d serves", st.serving.N)))
	g, err := st.spawn()
	if err != nil {
		st.failedRestarts++
		st.upstream(graceful.NotifyReady)
		err = fmt.Errorf("%w: %w; generation %d serves on", ErrRestartFailed, err, st.serving.N)
		for _, w := range waiters {
			w <- restartResult{err: err}
		}
		st.s.log.Error("restart failed", "err", err)
		st.emit(Event{Kind: EventRestartFailed, Gen: st.unstarted(), Err: err})
		st.emit(Event{Kind: EventRolledBack, Gen: st.serving.Generation, Err: err})
		st.runPending()
		st.startSpare()
		return
	}
	g.waiters, g.restart = waiters, true
	st.starting = g
}

// runPending starts the restart that requests queued meanwhile share.
func (st *state) runPending() {
	if len(st.pending) == 0 || st.stopping || st.starting != nil || st.handoffWait != nil {
		return
	}
	waiters := st.pending
	st.pending = nil
	if st.serving == nil {
		st.handoffGiveUp = time.Time{}
		for _, w := range waiters {
			w <- restartResult{err: fmt.Errorf("%w: the restart it was queued behind left none", ErrNotServing)}
		}
		return
	}
	st.restartWhenHandoffAnswers(waiters)
}

// ready handles READY=1 from g.
func (st *state) ready(g *gen) {
	if g.Ready.IsZero() {
		g.Ready = time.Now()
	}
	if g == st.spare && !st.spareTookOver(g) {
		return
	}
	if g != st.starting {
		if g == st.serving {
			st.upstream(graceful.NotifyReady) // after its own RELOADING=1
		}
		return
	}
	s := st.s
	if g.timer != nil {
		g.timer.Stop()
	}
	prev := st.serving
	st.starting, st.serving = nil, g
	g.State = serving
	for _, w := range g.waiters {
		w <- restartResult{gen: g.Generation}
	}
	g.waiters = nil
	st.closeHandoff()
	s.log.Info("generation ready", "gen", g.N, "pid", g.PID, "after", g.Ready.Sub(g.Started).Round(time.Microsecond))
	st.emit(Event{Kind: EventReady, Time: g.Ready, Gen: g.Generation})
	if g.restart {
		st.emit(Event{Kind: EventRestarted, Gen: g.Generation})
	}
	if prev != nil {
		st.restarts++
		st.retire(prev, s.cfg.StopSignal)
	}
	st.upReady = true
	st.upstream(graceful.NotifyReady, graceful.NotifyStatus(st.statusLine()))
	st.runPending()
	st.prepareStandby()
	st.watchHandoff(g)
	st.startSpare()
	st.prepareLaunch()
}

// retire signals g, which handed over, to stop.
func (st *state) retire(g *gen, sig syscall.Signal) {
	g.State = retiring
	st.emit(Event{Kind: EventRetiring, Gen: g.Generation})
	st.stopGeneration(g, sig)
}

// stopGeneration signals g to stop and kills it if it is still there after
// StopTimeout.
func (st *state) stopGeneration(g *gen, sig syscall.Signal) {
	if g.timer != nil {
		g.timer.Stop()
	}
	if err := st.signalMain(g, sig); err != nil {
		st.s.log.Warn("cannot signal a retiring generation", "gen", g.N, "err", err)
	}
	d := st.s.cfg.StopTimeout
	g.timer = time.AfterFunc(d, func() {
		st.s.post(func() {
			if st.gens[g.N] == g {
				st.s.log.Warn("generation still running after its stop timeout: killing it", "gen", g.N, "timeout", d)
				g.proc.killGroup()
				st.killMain(g)
			}
		})
	})
}

// startFailed kills a generation that did not become ready.
func (st *state) startFailed(g *gen, reason error) {
	s := st.s
	g.timer.Stop()
	g.State = failed
	g.proc.killGroup()
	st.killMain(g)
	st.starting = nil
	if st.serving != nil {
		st.failedRestarts++
		err := fmt.Errorf("%w: %w; it was killed and generation %d serves on", ErrRestartFailed, reason, st.serving.N)
		s.log.Error("restart failed, rolled back", "gen", g.N, "reason", reason, "serving", st.serving.N)
		for _, w := range g.waiters {
			w <- restartResult{err: err}
		}
		st.emit(Event{Kind: EventRestartFailed, Gen: g.Generation, Err: err})
		st.emit(Event{Kind: EventRolledBack, Gen: st.serving.Generation, Err: err})
		st.upstream(graceful.NotifyReady, graceful.NotifyStatus(st.statusLine()))
		st.runPending()
		st.startSpare() // the restart dismissed the one there was
		return
	}
	err := fmt.Errorf("%w: %w, and no generation serves", ErrRestartFailed, reason)
	for _, w := range g.waiters {
		w <- restartResult{err: err}
	}
	s.log.Error("generation failed to start", "gen", g.N, "reason", reason)
	if g.restart {
		st.emit(Event{Kind: EventRestartFailed, Gen: g.Generation, Err: err})
	} else {
		st.emit(Event{Kind: EventStartFailed, Gen: g.Generation, Err: reason})
	}
	st.scheduleStart()
}

// scheduleStart starts a generation to replace one that crashed or failed
// to start, after the backoff.
func (st *state) scheduleStart() {
	if st.stopping {
		return
	}
	st.crashes++
	d := backoff(st.crashes, st.s.cfg.MinBackoff, st.s.cfg.MaxBackoff)
	st.s.log.Info("starting the next generation", "after", d, "failures", st.crashes)
	st.emit(Event{Kind: EventBackoff, Wait: d})
	if d == 0 {
		st.startReplacement()
		return
	}
	st.backoff = time.AfterFunc(d, func() { st.s.post(st.startReplacement) })
}

func (st *state) startReplacement() {
	st.backoff = nil
	if st.stopping || st.starting != nil || st.serving != nil {
		return
	}
	if g := st.spare; g != nil {
		st.openHandoff()
		if st.takeSpare() {
			st.starting = g
			return
		}
	}
	g, err := st.spawn()
	if err != nil {
		st.s.log.Error("cannot start a generation", "err", err)
		st.emit(Event{Kind: EventStartFailed, Gen: st.unstarted(), Err: err})
		st.scheduleStart()
		return
	}
	st.starting = g
}

// stableAfter is how long a generation must have served for its crash not
// to count as part of a crash loop (unless MaxBackoff is longer).
const stableAfter = 10 * time.Second

// backoff is the wait before the start that follows the n-th consecutive
// failure: none after the first, then min, 2*min, ... up to max.
func backoff(n int, min, max time.Duration) time.Duration {
	if n <= 1 {
		return 0
	}
	d := min
	for i := 2; i < n && d < max; i++ {
		d *= 2
	}
	return time.Duration(minInt64(int64(d), int64(max)))
}

func minInt64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

// exited handles the end of a process: a generation's, or an orphan's.
func (st *state) exited(e procExit) {
	var g *gen
	for _, c := range st.gens {
		if c.PID == e.pid || c.MainPID == e.pid {
			g = c
			break
		}
	}
	if g == nil {
		if e.reaped {
			st.orphans++
			st.s.log.Debug("reaped an orphan", "pid", e.pid, "exit", e.exit)
			st.emit(Event{Kind: EventOrphan, Gen: Generation{PID: e.pid}, Exit: e.exit})
		}
		return
	}
	if e.pid == g.PID {
		g.procDone = true
		g.proc.exited()
	}
	if e.pid == g.PID && g.MainPID != g.PID && st.mainAlive(g) {
		st.s.log.Info("generation's first process exited; its main process goes on", "gen", g.N, "pid", g.PID, "main_pid", g.MainPID)
		return
	}
	st.ended(g, e.exit)
}

// ended handles the end of a generation's main process.
func (st *state) ended(g *gen, exit Exit) {
	s := st.s
	delete(st.gens, g.N)
	if g.timer != nil {
		g.timer.Stop()
	}
	if g.mainFd >= 0 {
		closeFd(g.mainFd)
		g.mainFd = -1
	}
	if !g.procDone {
		g.proc.killGroup() // what is left of it
	}
	g.proc.release()
	exit.Gen = g.N
	if g == st.stopGen {
		st.exit = exit
	}
	switch {
	case g == st.spare:
		st.spare = nil
		g.turn.Close()
		s.log.Warn("spare exited before its turn came; the next one starts once a generation is ready", "gen", g.N, "exit", exit)
		st.emit(Event{Kind: EventExited, Gen: g.Generation, Exit: exit})
	case g == st.starting:
		st.emit(Event{Kind: EventExited, Gen: g.Generation, Exit: exit})
		st.startFailed(g, fmt.Errorf("generation %d exited before it was ready (%s)", g.N, exit))
	case g == st.serving:
		st.serving = nil
		if st.stopping {
			s.log.Info("generation stopped", "gen", g.N, "exit", exit)
			st.emit(Event{Kind: EventExited, Gen: g.Generation, Exit: exit})
			return
		}
		st.crashCount++
		s.log.Error("serving generation died", "gen", g.N, "pid", g.PID, "exit", exit, "served", time.Since(g.Ready).Round(time.Millisecond))
		st.emit(Event{Kind: EventDied, Gen: g.Generation, Exit: exit})
		if time.Since(g.Ready) > max(s.cfg.MaxBackoff, stableAfter) {
			st.crashes = 0 // it had served long enough: not a loop
		}
		st.upstream(graceful.NotifyStatus(fmt.Sprintf("generation %d died (%s); starting the next", g.N, exit)))
		if st.starting != nil {
			return // the restart in progress replaces it
		}
		st.scheduleStart()
		// Requests queued behind a restart cannot run now.
		st.runPending()
	default:
		s.log.Info("generation exited", "gen", g.N, "state", g.State, "exit", exit)
		st.emit(Event{Kind: EventExited, Gen: g.Generation, Exit: exit})
	}
}

// stop stops everything (see Supervisor.Stop).
func (st *state) stop(sig syscall.Signal) {
	s := st.s
	if !st.stopping {
		st.stopping = true
		st.stopGen = st.serving
		s.log.Info("stopping", "signal", sig)
		var serving Generation
		if st.serving != nil {
			serving = st.serving.Generation
		}
		st.emit(Event{Kind: EventStopping, Gen: serving})
		st.upstream(graceful.NotifyStopping)
		if st.backoff != nil {
			st.backoff.Stop()
			st.backoff = nil
		}
		st.closeHandoff()
		st.closeStandby()
		st.dropLaunch()
		st.dropSpare()
		if st.handoffWait != nil {
			st.handoffWait.Stop()
			st.handoffWait = nil
		}
		st.handoffGiveUp = time.Time{}
		for _, w := range st.pending {
			w <- restartResult{err: fmt.Errorf("%w: restart not started", ErrStopping)}
		}
		st.pending = nil
	}
	if g := st.starting; g != nil {
		g.timer.Stop()
		g.State = failed
		err := fmt.Errorf("%w: generation %d killed before it was ready", ErrStopping, g.N)
		for _, w := range g.waiters {
			w <- restartResult{err: err}
		}
		g.waiters = nil
		if g.restart {
			st.emit(Event{Kind: EventRestartFailed, Gen: g.Generation, Err: err})
		}
		st.starting = nil
		g.proc.killGroup()
		st.killMain(g)
	}
	for _, g := range st.gens {
		if g.State != failed {
			st.stopGeneration(g, sig)
		}
	}
}

// forward sends sig to the serving generation.
func (st *state) forward(sig syscall.Signal) bool {
	if st.serving == nil {
		return false
	}
	if err := st.signalMain(st.serving, sig); err != nil {
		st.s.log.Warn("cannot forward a signal", "signal", sig, "gen", st.serving.N, "err", err)
		return false
	}
	return true
}

func (st *state) status() Status {
	out := Status{
		Stored: st.store.names(), Restarts: st.restarts, Failed: st.failedRestarts,
		Crashes: st.crashCount, Orphans: st.orphans, Stopping: st.stopping, Standby: st.standby != nil,
	}
	if g := st.serving; g != nil {
		c := g.Generation
		out.Serving = &c
	}
	if g := st.starting; g != nil {
		c := g.Generation
		out.Starting = &c
	}
	if g := st.spare; g != nil {
		c := g.Generation
		out.Spare, out.SpareWaiting = &c, g.spareWaiting
	}
	for n := 1; n <= st.next; n++ {
		if g := st.gens[n]; g != nil && g.State == retiring && g != st.serving {
			out.Retiring = append(out.Retiring, g.Generation)
		}
	}
	return out
}

func (st *state) statusLine() string {
	g := st.serving
	if g == nil {
		return "no generation serves"
	}
	line := "generation " + strconv.Itoa(g.N) + " serves"
	if g.Status != "" {
		line += ": " + g.Status
	}
	return line
}

// upstream relays states to the service manager above, when configured.
func (st *state) upstream(states ...string) {
	if !st.s.cfg.Upstream {
		return
	}
	if !st.upReady && len(states) > 0 && states[0] == graceful.NotifyReady {
		return // not before the first generation serves
	}
	if _, err := graceful.SdNotify(states...); err != nil {
		st.s.log.Warn("cannot notify the service manager", "err", err)
	}
}
