//go:build linux && race

package main_test

// buildFlags builds restart-sim with the race detector when the tests run
// with it, so that a -race run checks the supervisor and the generations
// too.
var buildFlags = []string{"-race"}
