package bench_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gracefulfd/graceful/bench/internal/handoff"
)

// BenchmarkHandoff measures one hand-off of a TCP listener to a newly
// started process, from starting it to knowing it holds a net.Listener.
// The exit of each new process is waited for outside the timer.
func BenchmarkHandoff(b *testing.B) {
	b.Run("impl=exec", func(b *testing.B) {
		ln := listenTCP(b)
		e := &handoff.Exec{Ln: ln}
		runHandoffs(b, e.Handoff)
	})
	b.Run("impl=graceful", func(b *testing.B) {
		dir, err := os.MkdirTemp("", "gf")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		g := handoff.NewGraceful(filepath.Join(dir, "s"), listenTCP(b))
		if err := g.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			if err := g.Close(); err != nil {
				b.Error(err)
			}
		}()
		runHandoffs(b, g.Handoff)
	})
	b.Run("impl=tableflip", func(b *testing.B) {
		// Each cycle needs a fresh first generation (one Upgrader per
		// process, and an upgraded one cannot upgrade again): that start is
		// not measured; the old generation times its own Upgrade call.
		var total time.Duration
		for range b.N {
			took, err := handoff.Tableflip{}.Cycle()
			if err != nil {
				b.Fatal(err)
			}
			total += took
		}
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
	})
}

// BenchmarkHandoffPaired runs the hand-offs of BenchmarkHandoff in
// turn within each iteration (rotating which goes first), so that a burst
// of load on a shared machine hits all three alike, and reports each
// one's mean time and the ratios of the means. ns/op is not reported.
func BenchmarkHandoffPaired(b *testing.B) {
	e := &handoff.Exec{Ln: listenTCP(b)}
	dir, err := os.MkdirTemp("", "gf")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	g := handoff.NewGraceful(filepath.Join(dir, "s"), listenTCP(b))
	if err := g.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := g.Close(); err != nil {
			b.Error(err)
		}
	}()
	timed := func(h func() (func() error, error)) (time.Duration, error) {
		start := time.Now()
		wait, err := h()
		took := time.Since(start)
		if err != nil {
			return 0, err
		}
		return took, wait()
	}
	ways := []func() (time.Duration, error){
		func() (time.Duration, error) { return timed(e.Handoff) },
		func() (time.Duration, error) { return timed(g.Handoff) },
		handoff.Tableflip{}.Cycle,
	}
	var total [3]time.Duration
	for i := range b.N {
		for k := range ways {
			w := (i + k) % len(ways)
			took, err := ways[w]()
			if err != nil {
				b.Fatal(err)
			}
			total[w] += took
		}
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(total[0].Nanoseconds())/n, "exec-ns/op")
	b.ReportMetric(float64(total[1].Nanoseconds())/n, "graceful-ns/op")
	b.ReportMetric(float64(total[2].Nanoseconds())/n, "tableflip-ns/op")
	b.ReportMetric(float64(total[1])/float64(total[0]), "graceful/exec")
	b.ReportMetric(float64(total[1])/float64(total[2]), "graceful/tableflip")
}

func runHandoffs(b *testing.B, h func() (func() error, error)) {
	b.Helper()
	for range b.N {
		wait, err := h()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := wait(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func listenTCP(b *testing.B) *net.TCPListener {
	b.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}
