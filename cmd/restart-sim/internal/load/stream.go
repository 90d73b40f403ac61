package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// StreamLoad keeps one TCP connection per client for the whole run and
// exchanges numbered frames on it (see package proto). The connections are
// handed from generation to generation with their state; a connection that
// breaks is a failure, counted, after which the client goes on with a new
// one (starting again at frame 0). Besides, a dialer opens a new connection
// for every frame, so that the listener is checked throughout the run, not
// only at the start.
type StreamLoad struct {
	addr   string
	cfg    Config
	mu     sync.Mutex
	conns  []net.Conn // every connection made, closed by Close
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
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return nil
}

// Close closes the connections; Run closes them too when it ends.
func (l *StreamLoad) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
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
	l.mu.Lock()
	first := slices.Clone(l.conns)
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range first {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.client(ctx, c)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.dialer(ctx)
	}()
	wg.Wait()
}

// dialerRate paces the dialer when the load is unpaced, so that a refused
// dial does not spin.
const dialerRate = 200

// dialer checks, throughout the run, that the stream listener still takes
// new connections at the address of the first generation: for each frame
// it dials anew, exchanges frame 0 and closes. A generation that serves
// streams on a listener of its own instead of the one it received leaves
// this address dead once its predecessor is gone: the dials are refused.
func (l *StreamLoad) dialer(ctx context.Context) {
	rate := l.cfg.Rate
	if rate <= 0 {
		rate = dialerRate
	}
	pace := newPacer(rate)
	defer pace.stop()
	d := net.Dialer{Timeout: l.cfg.timeout()}
	for n := int64(0); n < l.cfg.maxPerClient() && pace.wait(ctx); n++ {
		start := time.Now()
		sample := report.Sample{At: start.Sub(l.cfg.Start), Gen: -1}
		c, err := d.Dial("tcp", l.addr)
		if err == nil {
			var r proto.StreamReply
			r, err = exchange(c, 0, start.Add(l.cfg.timeout()))
			c.Close()
			sample.Outcome, sample.Gen = judgeReply(r, 0), int32(r.Gen)
		}
		if err != nil {
			sample.Outcome, sample.Gen = report.Classify(err), -1
		}
		sample.Latency = time.Since(start)
		l.series.Add(sample)
		l.counts.add(1, 0, 0, 0)
	}
}

// exchange sends frame seq on c and reads the answer, by deadline.
func exchange(c net.Conn, seq uint64, deadline time.Time) (proto.StreamReply, error) {
	req := make([]byte, proto.StreamRequestSize)
	reply := make([]byte, proto.StreamReplySize)
	proto.PutStreamRequest(req, seq)
	c.SetDeadline(deadline)
	if _, err := c.Write(req); err != nil {
		return proto.StreamReply{}, err
	}
	if _, err := io.ReadFull(c, reply); err != nil {
		return proto.StreamReply{}, err
	}
	return proto.ParseStreamReply(reply)
}

// judgeReply says whether r answers frame seq, the seq+1-th on its
// connection.
func judgeReply(r proto.StreamReply, seq uint64) report.Outcome {
	if r.Seq == seq && r.Status == proto.StatusOK && r.Count == seq+1 {
		return report.OK
	}
	return report.Wrong
}

// client exchanges frames on c. When c breaks, or answers out of step, the
// failure is counted and the client goes on with a new connection: a
// crashed generation takes its connections with it, and the load goes on
// for what follows.
func (l *StreamLoad) client(ctx context.Context, c net.Conn) {
	pace := newPacer(l.cfg.Rate)
	defer pace.stop()
	d := net.Dialer{Timeout: l.cfg.timeout()}
	seq := uint64(0)
	for n := int64(0); n < l.cfg.maxPerClient() && pace.wait(ctx); n, seq = n+1, seq+1 {
		if c == nil {
			start := time.Now()
			var err error
			if c, err = d.Dial("tcp", l.addr); err != nil { // started: runs to its end, like a request
				l.series.Add(report.Sample{At: start.Sub(l.cfg.Start), Gen: -1, Latency: time.Since(start), Outcome: report.Classify(err)})
				l.counts.add(1, 0, 0, 0)
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c)
			l.mu.Unlock()
			seq = 0
		}
		start := time.Now()
		sample := report.Sample{At: start.Sub(l.cfg.Start), Gen: -1}
		r, err := exchange(c, seq, start.Add(l.cfg.timeout()))
		sample.Latency = time.Since(start)
		dup := int64(0)
		switch {
		case err != nil:
			sample.Outcome = report.Classify(err)
		case r.Seq < seq:
			sample.Outcome, dup = report.Wrong, 1
		default:
			if sample.Outcome = judgeReply(r, seq); sample.Outcome == report.OK {
				sample.Gen = int32(r.Gen)
			}
		}
		l.series.Add(sample)
		l.counts.add(1, 0, dup, 0)
		if err != nil || sample.Outcome != report.OK {
			c.Close() // broken or out of step: the failure is counted, go on anew
			c = nil
		}
	}
}

// Result is what the load saw.
func (l *StreamLoad) Result() report.Load { return l.counts.result(Stream, l.series.Samples()) }

// Samples are the measured frames.
func (l *StreamLoad) Samples() []report.Sample { return l.series.Samples() }

// Progress counts the requests measured so far and those that failed.
func (l *StreamLoad) Progress() (measured, failed int) { return l.series.Count() }
