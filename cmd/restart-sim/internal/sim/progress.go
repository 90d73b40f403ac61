//go:build linux

package sim

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/load"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// progress prints a line on stderr every so often while the loads run: how
// far the restarts are, and how many requests were measured and failed.
type progress struct {
	every   time.Duration // 0: never
	planned int           // restart attempts planned
	gens    []load.Generator
	origin  time.Time
	out     io.Writer

	attempts, done, rolledBack atomic.Int64
}

// attempted counts a restart attempt.
func (p *progress) attempted(a report.Attempt) {
	p.attempts.Add(1)
	if a.OK {
		p.done.Add(1)
	}
	if a.RolledBack {
		p.rolledBack.Add(1)
	}
}

// start prints until the returned function is called; that function may be
// called more than once.
func (p *progress) start() (stop func()) {
	if p.every <= 0 {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(p.every)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				p.print()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-finished
	}
}

func (p *progress) print() {
	measured, failed := 0, 0
	for _, g := range p.gens {
		m, f := g.Progress()
		measured += m
		failed += f
	}
	fmt.Fprintf(p.out, "restart-sim: %3.0fs: restart %d of %d (%d done, %d rolled back); %d requests measured, %d failed\n",
		time.Since(p.origin).Seconds(), p.attempts.Load(), p.planned, p.done.Load(), p.rolledBack.Load(), measured, failed)
}
