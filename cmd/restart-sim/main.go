//go:build linux

// Command restart-sim runs a service under the graceful supervisor, under
// load, restarts it again and again, and reports what was lost: the
// built-in demo service, or yours (restart-sim [flags] -http URL --
// ./server args). See REPORT.md for the report and `restart-sim -h` for
// the flags.
package main

import (
	"os"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/generation"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/sim"
	"github.com/gracefulfd/graceful/supervisor"
)

func main() {
	// The supervisor starts a generation that gets descriptors by socket
	// activation through this executable (it sets LISTEN_PID, then runs
	// the service in the same process).
	if err := supervisor.ExecShim(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(127)
	}
	if len(os.Args) > 1 && os.Args[1] == generation.Command {
		os.Exit(generation.Main(os.Args[2:]))
	}
	os.Exit(sim.Main(os.Args[1:], os.Stdout, os.Stderr))
}
