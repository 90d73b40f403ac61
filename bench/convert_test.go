package bench_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/gracefulfd/graceful/bench/internal/harness"
	"github.com/gracefulfd/graceful/bench/internal/transfer"
	"github.com/gracefulfd/graceful/graceful"
)

// convertCount is the number of received listeners turned into
// net.Listener values per operation.
const convertCount = 1000

// BenchmarkConvert measures turning received listening sockets into
// net.Listener values: graceful.FdListener, on one goroutine and split over
// two, against what it wraps (os.NewFile, net.FileListener, Close). The
// descriptors are received from another process before each operation,
// and the listeners closed after it, outside the timer.
func BenchmarkConvert(b *testing.B) {
	convs := []struct {
		name     string
		workers  int
		toListen func(fd int) (net.Listener, error)
	}{
		{"impl=net.FileListener", 1, fileListener},
		{"impl=graceful.FdListener", 1, graceful.FdListener},
		{"impl=graceful.FdListener-2goroutines", 2, graceful.FdListener},
	}
	for _, c := range convs {
		b.Run(fmt.Sprintf("listeners=%d/%s", convertCount, c.name), func(b *testing.B) {
			harness.CheckNoLeak(b)
			r := transfer.StartFloorReceiver(b, convertCount)
			lns := make([]net.Listener, convertCount)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				fds, err := r.Request(convertCount)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				err = convertAll(fds, lns, c.workers, c.toListen)
				b.StopTimer()
				for i, ln := range lns {
					if ln != nil {
						ln.Close()
						lns[i] = nil
					}
				}
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// convertAll fills lns from fds with workers goroutines, each taking an
// equal share.
func convertAll(fds []int, lns []net.Listener, workers int, toListen func(int) (net.Listener, error)) error {
	errs := make([]error, workers)
	var wg sync.WaitGroup
	share := (len(fds) + workers - 1) / workers
	for w := range workers {
		lo, hi := w*share, min((w+1)*share, len(fds))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				ln, err := toListen(fds[i])
				if err != nil {
					errs[w] = errors.Join(errs[w], err)
					continue
				}
				lns[i] = ln
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// fileListener is the standard library's way, which FdListener wraps.
func fileListener(fd int) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	return net.FileListener(f)
}
