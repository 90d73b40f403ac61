// Package supervisor runs a service as successive generations of one
// program, so that it can be restarted, upgraded and recovered from a crash
// without refusing a connection. It is the engine of the
// graceful-supervisor command (cmd/graceful-supervisor) and can be
// embedded in any Go program.
//
//	s, err := supervisor.New(supervisor.Config{
//		Path:   "./server",
//		Args:   []string{"-addr", ":8080"},
//		Stdout: os.Stdout, Stderr: os.Stderr,
//	})
//	if err != nil { ... }
//	go func() { <-hup; s.Restart(ctx) }()
//	exit, err := s.Run(ctx) // until ctx ends or Stop
//
// # Generations and readiness
//
// Run starts generation 1 and keeps one generation serving. Each generation
// gets NOTIFY_SOCKET, the address of a datagram socket of the supervisor's,
// and speaks systemd's notification protocol (sd_notify(3)) on it: READY=1
// when it serves, and optionally STATUS=, STOPPING=, RELOADING=, MAINPID=,
// EXTEND_TIMEOUT_USEC=, FDSTORE=1 with FDNAME= and descriptors attached,
// FDSTOREREMOVE=1. A program written for systemd (sd_notify, go-systemd,
// systemd-notify, Python's socket module) runs under the supervisor
// unchanged, and one written for the supervisor runs under systemd
// (Type=notify). Package graceful has the client side (SdNotify, SdStore,
// ReceiveActivation).
//
// A datagram is believed only when the kernel's credentials on it
// (SO_PASSCRED) show the supervisor's own uid and a pid that belongs to a
// generation still running: the process the supervisor started, the main
// process it named with MAINPID=, or a descendant of either (its
// /proc/<pid>/stat parent chain leads to one of them). A sender that has
// already exited cannot be placed and is ignored, as systemd does; a short
// helper such as systemd-notify names its parent (the generation) as the
// sender. Other datagrams are logged and dropped, their descriptors closed.
//
// # Restarts and rollback
//
// Restart (also SIGHUP and `graceful-supervisor restart` in the command)
// starts the next generation beside the serving one. The new one takes the
// service's descriptors over (with package graceful from the old one, or
// from the supervisor's store) and says READY=1; then the old one gets
// Config.StopSignal (SIGTERM), drains and exits, and is killed if it is
// still there after StopTimeout. A new generation that exits, or is not
// ready within ReadyTimeout, is killed with its process group and the
// serving one goes on: Restart returns an error matching ErrRestartFailed
// that says why. A restart asked for while one is in progress is queued
// behind it (requests that arrive meanwhile share one further restart); one
// asked for while no generation serves is refused with ErrNotServing.
// With Config.Handoff, a restart also waits (up to ReadyTimeout, then it
// fails) until the serving generation's hand-off socket answers: a
// generation may say READY=1 before it has placed the socket, which its
// predecessor held, and a successor started then would find no server and
// begin without the descriptors. The supervisor looks for that answer
// (a connection, and the listener's pid by SO_PEERCRED) as soon as a
// generation is ready, so that a later restart need not; what the next
// start needs besides the fork (standard input, the output pipes, the
// environment) is made in advance too.
//
// # Crash safety
//
// The supervisor keeps duplicates of the descriptors a generation stores
// with FDSTORE=1, or sends over the graceful protocol to the store socket
// named by StoreEnv (each with Meta{"name": FDNAME}), from a process of a
// running generation only (close-on-exec, at most FdStoreMax, the same
// open socket stored twice kept once). When the serving generation dies on its own (a
// crash, SIGKILL, a panic), the supervisor starts the next one at once and
// hands it the store, so that a listening socket, whose accept queue the
// kernel keeps as long as one process holds it, never refuses a connection:
// clients see a delay. Handing happens in one of two ways:
//
//   - socket activation, as systemd hands its store after a restart: the
//     generation gets the descriptors as 3, 4, ... with LISTEN_FDS,
//     LISTEN_FDNAMES and LISTEN_PID (every generation does, while the
//     store is not empty);
//   - with Config.Handoff, the graceful protocol: while no generation
//     serves, the supervisor serves the store at the service's own
//     hand-off socket, each descriptor with Meta{"name": FDNAME}, so that
//     the next generation's ordinary graceful.Receive finds them there as
//     it would find its predecessor's. No variable is set then. The
//     supervisor binds that socket in advance, in its own directory, while
//     the store holds descriptors (Status.Standby), and after a crash renames it
//     into place over the dead generation's stale socket: binding a
//     socket file can take longer than the rest of the work before the
//     successor starts.
//
// LISTEN_PID must be the pid of the program that reads it, which is known
// only after fork: the supervisor starts such a generation through a shim,
// a copy of a program that calls ExecShim first thing in main (the
// graceful-supervisor command does); it sets LISTEN_PID and executes the
// service in the same process. Only the generation being started gets the
// descriptors and the variables: the supervisor's own copies are
// close-on-exec, and programs (graceful.ReceiveActivation, go-systemd's
// activation package, sd_listen_fds) unset the variables, which are checked
// against LISTEN_PID anyway, so grandchildren do not inherit them.
//
// # A spare
//
// With Config.Spare (and Config.Handoff), the supervisor keeps the next
// generation started in advance while one serves: a spare, started with
// graceful.SpareEnv naming a socket, whose first graceful.Receive or Dial
// (graceful.AwaitTurn) says it waits and blocks until the supervisor says
// its turn has come. When the
// serving generation dies, the supervisor places the store at the
// hand-off socket and tells the spare: the recovery is a hand-off to a
// program already running, without the start of a process, which is
// most of what a recovery takes otherwise (bench/ANALYSIS.md). Once the
// spare serves, the next spare starts. A restart does not use the spare,
// which runs the program as it was when it started: it dismisses it (its
// Receive fails with graceful.ErrSpareDismissed, and it gets StopSignal)
// and starts the program afresh, so its number is spent. A spare that
// exits before its turn is replaced once a generation is next ready.
//
// The price is an idle process, and the code before its first Receive
// runs while the serving generation serves: it must not take what only
// one instance may hold. A program that does not wait as a spare (it does
// not call graceful's Receive, Dial or AwaitTurn first, nor honour
// graceful.SpareEnv) takes
// the set from the serving generation at once, as a restart would; the
// supervisor treats that as a restart that took over, logs why, and
// starts no more spares.
//
// A crash loop backs off: the first crash is answered at once; after every
// further generation that fails to become ready, or crashes within 10
// seconds (or MaxBackoff, if longer) of becoming ready, the next start
// waits twice as long as the one before, from MinBackoff up to MaxBackoff.
// A generation that served longer than that starts the count again.
//
// # Events
//
// Config.Events follows the service as a program would: it is called with
// an Event for every step of every generation (started, ready, retiring,
// exited or died, with the exit status), every restart (requested,
// restarted, or failed and rolled back, with the error that says why),
// every crash-loop wait, every change of the store and every STATUS=.
// Each EventKind's documentation says what it means and what follows it.
// A restart that takes over reports, in order:
//
//	restart-requested (the old generation), started, ready, restarted
//	(the new one), retiring, exited (the old one)
//
// The callback runs on a goroutine of its own, in the order of the events:
// it may call Status, Restart or Stop, and the supervisor goes on while it
// runs (events wait for it in memory). The log messages of Config.Logger
// are for people and may change; events are the interface for programs.
//
// # PID 1 and the terminal
//
// With Config.ReapOrphans (set by the command, and forced when the process
// is PID 1) the supervisor reaps every child, orphans included, and
// outside PID 1 it becomes a child subreaper (PR_SET_CHILD_SUBREAPER), so
// that processes a generation leaves behind are reaped too. Every
// generation runs in its own process group: a terminal's Ctrl-C reaches
// the supervisor only, whose Stop forwards the signal to the serving
// generation (and stops the others), waits for all of them, and reports
// the serving one's exit status, which the command exits with. The output
// of every generation is copied line by line, each line starting with
// "[gen N] ".
//
// # Control socket
//
// Config.Dir (0700, the supervisor's user only) holds notify.sock, the
// notification socket, and control.sock (0600), on which
// `graceful-supervisor restart` and `status` talk to a running
// supervisor (RequestRestart, RequestStatus). The control socket checks
// its peer's SO_PEERCRED as graceful's hand-off socket does: the same
// effective uid, or the request is refused.
//
// # Under systemd
//
// With Config.Upstream (the command sets it when NOTIFY_SOCKET is set) the
// supervisor is itself a Type=notify service: it says READY=1 once the
// first generation serves, RELOADING=1 and READY=1 around each restart,
// STOPPING=1, each serving generation's STATUS=, and it passes stored
// descriptors on to systemd's own store. Socket activation of the
// supervisor (systemd, systemd-socket-activate) fills its store through
// Config.Store. See example/systemd for a unit.
package supervisor
