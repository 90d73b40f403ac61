package bench_test

import (
	"fmt"
	"testing"

	"github.com/gracefulfd/graceful/bench/internal/harness"
	"github.com/gracefulfd/graceful/bench/internal/transfer"
)

// transferSizes are the set sizes measured: one listener, the most one
// message can carry, and a set that needs four messages.
var transferSizes = []int{1, 253, 1000}

// BenchmarkTransfer measures one request for a set of descriptors from
// another process until every descriptor is in hand (and closed again),
// for each implementation on the same machine in the same run.
func BenchmarkTransfer(b *testing.B) {
	for _, mode := range []string{transfer.Conn, transfer.Dial} {
		for _, n := range transferSizes {
			for _, impl := range transfer.Implementations[mode] {
				b.Run(fmt.Sprintf("mode=%s/fds=%d/impl=%s", mode, n, impl), func(b *testing.B) {
					harness.CheckNoLeak(b)
					r := transfer.Start(b, mode, impl, n)
					if err := r.Receive(n); err != nil { // warm up, and prove it works
						b.Fatal(err)
					}
					b.ReportAllocs()
					b.ResetTimer()
					for range b.N {
						if err := r.Receive(n); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					if busy, ok := transfer.BusyRetries(r); ok {
						b.ReportMetric(float64(busy)/float64(b.N), "busy-retries/op")
					}
				})
			}
		}
	}
}
