//go:build linux && !race

package main_test

var buildFlags []string
