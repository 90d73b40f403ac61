//go:build linux

// Command graceful-supervisor runs a service as successive generations of
// one program, restarts it without refusing a connection, and recovers it
// from a crash with its listeners (package
// github.com/gracefulfd/graceful/supervisor does the work).
//
//	graceful-supervisor [flags] -- ./server args   # run; Ctrl-C or SIGTERM stops
//	graceful-supervisor restart [-dir DIR]          # restart, wait, report
//	graceful-supervisor status [-dir DIR] [-json]   # what runs
//
// SIGHUP to the supervisor restarts the service too. `restart` exits 0 when
// the new generation took over, 1 when it failed (it was killed, the
// previous one serves on), 2 when the supervisor could not be asked, and 3
// when the restart was refused (no generation serves yet, or stopping). The
// supervisor exits with the exit status of the generation that was serving
// when it stopped (128+N for a signal N). Run `graceful-supervisor -h` for
// the flags.
package main

import (
	"os"

	"github.com/gracefulfd/graceful/supervisor"
)

func main() {
	if err := supervisor.ExecShim(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(127)
	}
	os.Exit(dispatch(os.Args[1:]))
}
