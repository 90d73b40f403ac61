//go:build linux

// Package supervisor runs the generations of the restart-sim demo service:
// it starts generation 0, replaces the current generation on every
// Restart, rolls back when a hand-off fails (the new process is killed, the
// old one goes on serving), and stops the last one on Stop.
//
// The supervisor keeps its own PID for the whole run, so that it can be
// PID 1 in a container: it starts each generation through package harness
// (which reaps it), and a Reaper reaps any orphan the kernel hands it.
// Generations run in their own process group, so that a terminal's Ctrl-C
// reaches only the supervisor, which forwards the stop as SIGTERM.
package supervisor
