//go:build !linux

// Command restart-sim needs Linux: it counts descriptors in /proc, starts
// generations through package harness, and reaps orphans as a child
// subreaper. Elsewhere it only says so.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "restart-sim runs on Linux only (this is %s); try it in Docker: cmd/restart-sim/docker.sh\n", runtime.GOOS)
	os.Exit(2)
}
