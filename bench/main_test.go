package bench_test

import (
	"fmt"
	"maps"
	"os"
	"testing"

	"github.com/gracefulfd/graceful/bench/internal/handoff"
	"github.com/gracefulfd/graceful/bench/internal/harness"
	"github.com/gracefulfd/graceful/bench/internal/transfer"
	"github.com/gracefulfd/graceful/bench/internal/underload"
)

// TestMain lets this binary re-execute itself as the peer process of a
// benchmark. In the benchmark process it also adopts orphaned descendants
// (tableflip's new generations outlive their parents) so that they can be
// reaped.
func TestMain(m *testing.M) {
	roles := map[string]func() error{}
	maps.Copy(roles, transfer.Roles)
	maps.Copy(roles, handoff.Roles)
	maps.Copy(roles, underload.Roles)
	if os.Getenv("GF_BENCH_ROLE") == "" {
		if err := harness.SetSubreaper(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	harness.Main(m, roles)
}
