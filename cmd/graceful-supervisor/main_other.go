//go:build !linux

// Command graceful-supervisor needs Linux (child subreaper, pidfds,
// SO_PASSCRED, /proc); elsewhere it only says so.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "graceful-supervisor runs on Linux only (this is %s)\n", runtime.GOOS)
	os.Exit(2)
}
