package load

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// lateGrace is how long a client waits, after its last request, for answers
// that arrive after their timeout: they are not lost, only late.
const lateGrace = 300 * time.Millisecond

// UDPLoad sends numbered datagrams, one outstanding per client, and waits
// for each answer. A datagram with no answer within the timeout fails with
// "timeout"; one never answered at all, not even late, is lost; an answer
// that comes twice is duplicated.
type UDPLoad struct {
	addr   string
	cfg    Config
	echo   bool // a service of the user's: it sends each datagram back as it came
	series report.Series
	counts counts

	mu     sync.Mutex
	lostAt []time.Duration // when each lost datagram was sent
}

// NewUDP returns a UDP load against addr (host:port on loopback).
func NewUDP(cfg Config, addr string) (*UDPLoad, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	return &UDPLoad{addr: addr, cfg: cfg}, nil
}

// NewUDPEcho returns a UDP load against an echo service of the user's
// (host:port on loopback): each answer must be the datagram sent.
func NewUDPEcho(cfg Config, addr string) (*UDPLoad, error) {
	l, err := NewUDP(cfg, addr)
	if err == nil {
		l.echo = true
	}
	return l, err
}

// LostAt gives the times (since Config.Start) at which the lost datagrams
// were sent; call it after Run.
func (l *UDPLoad) LostAt() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lostAt)
}

// Name is "udp".
func (l *UDPLoad) Name() string { return UDP }

// Run runs the clients until ctx ends.
func (l *UDPLoad) Run(ctx context.Context) {
	l.cfg.runClients(func(i int) { l.client(ctx, uint32(i)) })
}

// udpClient is one client's bookkeeping: which datagrams were answered,
// and how often.
type udpClient struct {
	id      uint32
	echo    bool
	conn    net.Conn
	answers map[uint64]int
	buf     []byte
	// lastSeq and lastGen describe the last answer read.
	lastSeq uint64
	lastGen int
}

func (l *UDPLoad) client(ctx context.Context, id uint32) {
	conn, err := net.DialTimeout("udp", l.addr, l.cfg.timeout())
	if err != nil {
		l.series.Add(report.Sample{At: since(l.cfg.Start), Gen: -1, Outcome: report.Classify(err)})
		l.counts.add(1, 1, 0, 0)
		return
	}
	defer conn.Close()
	c := &udpClient{id: id, conn: conn, echo: l.echo, answers: map[uint64]int{}, buf: make([]byte, 64)}
	var sentAt []time.Duration
	pace := newPacer(l.cfg.Rate)
	defer pace.stop()
	req := make([]byte, proto.UDPRequestSize)
	sent := uint64(0)
	for ; int64(sent) < l.cfg.maxPerClient() && pace.wait(ctx); sent++ {
		proto.PutUDPRequest(req, id, sent)
		start := time.Now()
		sample := report.Sample{At: start.Sub(l.cfg.Start), Gen: -1}
		sentAt = append(sentAt, sample.At)
		_, err := conn.Write(req)
		if err == nil {
			var gen int
			gen, err = c.await(sent, start.Add(l.cfg.timeout()))
			sample.Gen = int32(gen)
		}
		sample.Latency = time.Since(start)
		sample.Outcome = report.Classify(err)
		l.series.Add(sample)
	}
	// Collect answers that come after their timeout: late, not lost.
	for c.read(time.Now().Add(lateGrace)) == nil {
	}
	var lost, dup int64
	for seq := range sent {
		switch n := c.answers[seq]; {
		case n == 0:
			lost++
			l.mu.Lock()
			l.lostAt = append(l.lostAt, sentAt[seq])
			l.mu.Unlock()
		case n > 1:
			dup += int64(n - 1)
		}
	}
	l.counts.add(int64(sent), lost, dup, 0)
}

// await reads answers until the one to seq arrives or the deadline passes.
func (c *udpClient) await(seq uint64, deadline time.Time) (gen int, err error) {
	for {
		if err := c.read(deadline); err != nil {
			return -1, err
		}
		if c.lastSeq == seq && c.answers[seq] == 1 {
			return c.lastGen, nil
		}
	}
}

// read reads one answer and counts it.
func (c *udpClient) read(deadline time.Time) error {
	c.conn.SetReadDeadline(deadline)
	n, err := c.conn.Read(c.buf)
	if err != nil {
		return err
	}
	client, seq, gen, err := proto.ParseUDPReply(c.buf[:n])
	if c.echo {
		client, seq, err = proto.ParseUDPRequest(c.buf[:n])
		gen = -1
	}
	if err != nil || client != c.id {
		return nil // not ours: ignore it, keep waiting
	}
	c.answers[seq]++
	c.lastSeq, c.lastGen = seq, gen
	return nil
}

// Result is what the load saw.
func (l *UDPLoad) Result() report.Load { return l.counts.result(UDP, l.series.Samples()) }

// Samples are the measured datagrams.
func (l *UDPLoad) Samples() []report.Sample { return l.series.Samples() }

// Progress counts the requests measured so far and those that failed.
func (l *UDPLoad) Progress() (measured, failed int) { return l.series.Count() }
