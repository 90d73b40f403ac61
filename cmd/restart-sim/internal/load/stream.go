package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// StreamLoad keeps one TCP connection per client for the whole run and
// exchanges numbered frames on it (see package proto). The connections are
// handed from generation to generation with their state; a client never
// reconnects: a connection that breaks stays broken, and the failure is
// counted.
type StreamLoad struct {
	addr   string
	cfg    Config
	conns  []net.Conn
	series report.Series
	counts counts
}

// NewStream returns a stream load against addr (host:port on loopback).
func NewStream(cfg Config, addr string) (*StreamLoad, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	return &StreamLoad{addr: addr, cfg: cfg}, nil
}

// Name is "stream".
func (l *StreamLoad) Name() string { return Stream }

// Connect opens every client's connection. Call it before the first
// hand-off, so that every stream is established in the generation that
// hands it over.
func (l *StreamLoad) Connect(ctx context.Context) error {
	d := net.Dialer{Timeout: l.cfg.timeout()}
	for range l.cfg.clients() {
		c, err := d.DialContext(ctx, "tcp", l.addr)
		if err != nil {
			l.Close()
			return fmt.Errorf("load: connect stream to %s: %w", l.addr, err)
		}
		l.conns = append(l.conns, c)
	}
	return nil
}

// Close closes the connections; Run closes them too when it ends.
func (l *StreamLoad) Close() {
	for _, c := range l.conns {
		c.Close()
	}
}

// Run exchanges frames on every connection until ctx ends.
func (l *StreamLoad) Run(ctx context.Context) {
	if l.conns == nil {
		if err := l.Connect(ctx); err != nil {
			l.series.Add(report.Sample{At: since(l.cfg.Start), Gen: -1, Outcome: report.Classify(err)})
			l.counts.add(1, 0, 0, 0)
			return
		}
	}
	defer l.Close()
	var wg sync.WaitGroup
	for _, c := range l.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.client(ctx, c)
		}()
	}
	wg.Wait()
}

func (l *StreamLoad) client(ctx context.Context, c net.Conn) {
	pace := newPacer(l.cfg.Rate)
	defer pace.stop()
	req := make([]byte, proto.StreamRequestSize)
	reply := make([]byte, proto.StreamReplySize)
	for seq := uint64(0); int64(seq) < l.cfg.maxPerClient() && pace.wait(ctx); seq++ {
		proto.PutStreamRequest(req, seq)
		start := time.Now()
		sample := report.Sample{At: start.Sub(l.cfg.Start), Gen: -1}
		c.SetDeadline(start.Add(l.cfg.timeout()))
		_, err := c.Write(req)
		if err == nil {
			_, err = io.ReadFull(c, reply)
		}
		sample.Latency = time.Since(start)
		dup := int64(0)
		if err != nil {
			sample.Outcome = report.Classify(err)
		} else {
			r, _ := proto.ParseStreamReply(reply)
			switch {
			case r.Seq == seq && r.Status == proto.StatusOK && r.Count == seq+1:
				sample.Outcome, sample.Gen = report.OK, int32(r.Gen)
			case r.Seq < seq:
				sample.Outcome, dup = report.Wrong, 1
			default:
				sample.Outcome = report.Wrong
			}
		}
		l.series.Add(sample)
		l.counts.add(1, 0, dup, 0)
		if err != nil || sample.Outcome != report.OK {
			return // the stream is broken or out of step: never reconnect
		}
	}
}

// Result is what the load saw.
func (l *StreamLoad) Result() report.Load { return l.counts.result(Stream, l.series.Samples()) }

// Samples are the measured frames.
func (l *StreamLoad) Samples() []report.Sample { return l.series.Samples() }
