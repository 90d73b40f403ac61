package load

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// Load names, as they appear in flags and reports.
const (
	HTTP      = "http"      // HTTP, a new TCP connection per request
	KeepAlive = "keepalive" // HTTP on one keep-alive connection per client
	Stream    = "stream"    // a long-lived TCP connection per client
	UDP       = "udp"       // UDP request/response
	File      = "file"      // lines appended to the shared file by the service
	TCP       = "tcp"       // a TCP echo service of the user's, a new connection per line
)

// Names lists every load in report order.
var Names = []string{HTTP, KeepAlive, Stream, UDP, File}

// ErrNotLoopback is returned for a target address that is not on loopback.
var ErrNotLoopback = errors.New("load: target is not a loopback address")

// Config is what every generator shares.
type Config struct {
	// Start is the origin of the samples' times.
	Start time.Time
	// Clients is the number of concurrent clients; 0 means 1.
	Clients int
	// Rate is the requests per second of each client; 0 means as fast as
	// answers come (closed loop).
	Rate float64
	// Timeout bounds each request; 0 means 2 seconds.
	Timeout time.Duration
	// MaxPerClient bounds the requests of one client; 0 means 10 million.
	MaxPerClient int64
}

func (c Config) clients() int { return max(c.Clients, 1) }

// runClients runs client(0) ... client(clients-1) at once and waits for
// them all.
func (c Config) runClients(client func(id int)) {
	var wg sync.WaitGroup
	for i := range c.clients() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client(i)
		}()
	}
	wg.Wait()
}

func (c Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 2 * time.Second
}

func (c Config) maxPerClient() int64 {
	if c.MaxPerClient > 0 {
		return c.MaxPerClient
	}
	return 10_000_000
}

// Generator is one running load.
type Generator interface {
	// Name is the load's name.
	Name() string
	// Run sends requests until ctx ends or the count bound is reached,
	// waits for every answer (each bounded by the timeout) and returns.
	Run(ctx context.Context)
	// Result is what the load saw; call it after Run. Latency is left for
	// the report to fill from Samples.
	Result() report.Load
	// Samples are the measured requests, ordered by time.
	Samples() []report.Sample
	// Progress counts the requests measured so far and those that failed;
	// cheap enough to call every few seconds during the run.
	Progress() (measured, failed int)
}

// pacer spaces one client's requests.
type pacer struct {
	tick *time.Ticker
}

func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{tick: time.NewTicker(time.Duration(float64(time.Second) / rate))}
}

// wait blocks until the next request may go, and reports false when ctx
// ended first.
func (p *pacer) wait(ctx context.Context) bool {
	if p.tick == nil {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-p.tick.C:
		return true
	}
}

func (p *pacer) stop() {
	if p.tick != nil {
		p.tick.Stop()
	}
}

// counts tallies a load's requests; safe for concurrent use.
type counts struct {
	mu                    sync.Mutex
	sent, lost, dup, retr int64
}

func (c *counts) add(sent, lost, dup, retried int64) {
	c.mu.Lock()
	c.sent += sent
	c.lost += lost
	c.dup += dup
	c.retr += retried
	c.mu.Unlock()
}

// result turns the counts and the samples into a report.Load.
func (c *counts) result(name string, samples []report.Sample) report.Load {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok, failedBy := report.CountOutcomes(samples)
	failed := int64(0)
	for _, n := range failedBy {
		failed += n
	}
	return report.Load{
		Name: name, Sent: c.sent, OK: ok, Failed: failed, FailedBy: failedBy,
		Lost: c.lost, Duplicated: c.dup, Retried: c.retr,
	}
}

func since(start time.Time) time.Duration { return time.Since(start) }
