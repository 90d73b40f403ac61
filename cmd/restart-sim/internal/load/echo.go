package load

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// TCPEchoLoad drives a TCP echo service of the user's: each exchange dials
// anew, sends one numbered line, expects the same line back, and closes.
// Dialling for every exchange checks the listener throughout the run.
type TCPEchoLoad struct {
	addr   string
	cfg    Config
	series report.Series
	counts counts
}

// NewTCPEcho returns a TCP echo load against addr (host:port on loopback).
func NewTCPEcho(cfg Config, addr string) (*TCPEchoLoad, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	return &TCPEchoLoad{addr: addr, cfg: cfg}, nil
}

// Name is "tcp".
func (l *TCPEchoLoad) Name() string { return TCP }

// Run runs the clients until ctx ends.
func (l *TCPEchoLoad) Run(ctx context.Context) {
	l.cfg.runClients(func(i int) { l.client(ctx, i) })
}

func (l *TCPEchoLoad) client(ctx context.Context, id int) {
	rate := l.cfg.Rate
	if rate <= 0 {
		rate = dialerRate // each exchange dials: never unpaced
	}
	pace := newPacer(rate)
	defer pace.stop()
	d := net.Dialer{Timeout: l.cfg.timeout()}
	for n := int64(0); n < l.cfg.maxPerClient() && pace.wait(ctx); n++ {
		start := time.Now()
		sample := report.Sample{At: start.Sub(l.cfg.Start), Gen: -1}
		line := fmt.Sprintf("restart-sim %d %d\n", id, n)
		got, err := echoLine(&d, l.addr, line, start.Add(l.cfg.timeout()))
		switch {
		case err != nil:
			sample.Outcome = report.Classify(err)
		case got != line:
			sample.Outcome = report.Wrong
		}
		sample.Latency = time.Since(start)
		l.series.Add(sample)
		l.counts.add(1, 0, 0, 0)
	}
}

// echoLine dials addr, sends line and reads one line back, by deadline.
func echoLine(d *net.Dialer, addr, line string, deadline time.Time) (string, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte(line)); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// Result is what the load saw.
func (l *TCPEchoLoad) Result() report.Load { return l.counts.result(TCP, l.series.Samples()) }

// Samples are the measured exchanges.
func (l *TCPEchoLoad) Samples() []report.Sample { return l.series.Samples() }

// Progress counts the exchanges measured so far and those that failed.
func (l *TCPEchoLoad) Progress() (measured, failed int) { return l.series.Count() }
