// Command reference is the conformance adapter (spec/adapter.md) around
// the graceful library: the implementation every check of the suite must
// pass, MUST and SHOULD alike.
//
//	go build -o /tmp/reference ./conformance/adapters/reference
//	graceful-conformance --strict --adapter /tmp/reference
package main

import (
	"os"

	"github.com/gracefulfd/graceful/conformance/internal/refadapter"
)

func main() { os.Exit(refadapter.Main()) }
