//go:build linux

package generation

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
)

// lineWriters append numbered lines to the shared file, each writer with
// its own numbering that continues from generation to generation: the next
// number of every writer travels in the file's metadata.
//
// mu is held for each line written, and by a hand-off for the whole
// session, so that the old generation writes nothing once it has described
// the numbers to its successor.
type lineWriters struct {
	file   *os.File
	gen    int
	served *atomic.Int64

	mu      sync.Mutex
	next    []uint64
	stopped bool
	wg      sync.WaitGroup
}

// parseNext reads the "next" metadata: one number per writer, comma
// separated.
func parseNext(s string, writers int) ([]uint64, error) {
	next := make([]uint64, writers)
	if s == "" {
		return next, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != writers {
		return nil, fmt.Errorf("lines metadata: %d writers, want %d", len(parts), writers)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("lines metadata %q: %w", s, err)
		}
		next[i] = n
	}
	return next, nil
}

// formatNext writes the "next" metadata; call with mu held.
func (lw *lineWriters) formatNext() string {
	parts := make([]string, len(lw.next))
	for i, n := range lw.next {
		parts[i] = strconv.FormatUint(n, 10)
	}
	return strings.Join(parts, ",")
}

// snapshot returns a copy of the next numbers.
func (lw *lineWriters) snapshot() []uint64 {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return append([]uint64(nil), lw.next...)
}

// start runs one goroutine per writer, each writing rate lines a second.
func (lw *lineWriters) start(rate float64) {
	interval := time.Duration(float64(time.Second) / rate)
	for w := range lw.next {
		lw.wg.Add(1)
		go func() {
			defer lw.wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for range tick.C {
				if !lw.write(w) {
					return
				}
			}
		}()
	}
}

// write appends the next line of writer w, in a single write(2) on the
// O_APPEND file, and reports false once the writers are stopped.
func (lw *lineWriters) write(w int) bool {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.stopped {
		return false
	}
	line := proto.Line{Writer: w, N: lw.next[w], Gen: lw.gen}.String() + "\n"
	if _, err := lw.file.WriteString(line); err != nil {
		lw.stopped = true
		fmt.Fprintf(os.Stderr, "restart-sim: generation %d: write line: %v\n", lw.gen, err)
		return false
	}
	lw.next[w]++
	lw.served.Add(1)
	return true
}

// stop ends the writers and waits for them.
func (lw *lineWriters) stop() {
	lw.mu.Lock()
	lw.stopped = true
	lw.mu.Unlock()
	lw.wg.Wait()
}

// misbehave writes, with mu held, what DefectLinesDouble and
// DefectLinesTorn make a retiring generation write once it has handed its
// numbers over.
func (lw *lineWriters) misbehave(cfg Config) {
	switch {
	case cfg.has(DefectLinesDouble) && len(lw.next) > 0:
		lw.file.WriteString(proto.Line{Writer: 0, N: lw.next[0], Gen: lw.gen}.String() + "\n")
	case cfg.has(DefectLinesTorn):
		lw.file.WriteString("w=0 n=")
	}
}

// nextFromFile reads the shared file and returns, for each of writers line
// writers, the number after the highest one written: where numbering goes
// on when no predecessor said it (a first start, or after a crash).
func nextFromFile(path string, writers int) ([]uint64, error) {
	next := make([]uint64, writers)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return next, nil
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if l, err := proto.ParseLine(line); err == nil && l.Writer < writers {
			next[l.Writer] = max(next[l.Writer], l.N+1)
		}
	}
	return next, nil
}
