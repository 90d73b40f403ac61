// Package procsys reads what the suite and its mutants need of the
// kernel's settings.
package procsys

import (
	"os"
	"strconv"
	"strings"
)

// OverflowUID is the uid the kernel reports for a user it cannot map into
// the reader's user namespace (/proc/sys/kernel/overflowuid, usually
// 65534).
func OverflowUID() int {
	b, err := os.ReadFile("/proc/sys/kernel/overflowuid")
	if err != nil {
		return 65534
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 65534
	}
	return n
}
