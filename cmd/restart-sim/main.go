//go:build linux

// Command restart-sim runs the graceful demo service under load, restarts
// it again and again, and reports what was lost. See REPORT.md for the JSON
// report and `restart-sim -h` for the flags.
package main

import (
	"os"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/generation"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/sim"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == generation.Command {
		os.Exit(generation.Main(os.Args[2:]))
	}
	os.Exit(sim.Main(os.Args[1:], os.Stdout, os.Stderr))
}
