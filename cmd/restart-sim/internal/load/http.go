package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// HTTPLoad sends GET requests, each answered with the number of the
// generation that served it.
//
// Requests are idempotent GETs, so on a reused keep-alive connection that
// the server closed as the request went out, net/http retries the request
// once on a new connection, as HTTP allows; such requests count as OK and
// as retried.
type HTTPLoad struct {
	name      string
	url       string
	keepAlive bool
	status    int // a service of the user's: the status every answer must have; 0 for the demo
	cfg       Config
	series    report.Series
	counts    counts
}

// NewHTTP returns an HTTP load against addr (host:port on loopback). With
// keepAlive each client keeps one connection open; without, each request
// opens a new one.
func NewHTTP(cfg Config, addr string, keepAlive bool) (*HTTPLoad, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	name := HTTP
	if keepAlive {
		name = KeepAlive
	}
	return &HTTPLoad{name: name, url: "http://" + addr + proto.HTTPPath, keepAlive: keepAlive, cfg: cfg}, nil
}

// NewHTTPURL returns an HTTP load against a service of the user's: GET url
// (on loopback), and every answer must have the given status.
func NewHTTPURL(cfg Config, rawURL string, keepAlive bool, status int) (*HTTPLoad, error) {
	if err := CheckURL(rawURL); err != nil {
		return nil, err
	}
	u, _ := url.Parse(rawURL)
	l, err := NewHTTP(cfg, u.Host, keepAlive)
	if err != nil {
		return nil, err
	}
	l.url, l.status = rawURL, status
	return l, nil
}

// Name is "http" or "keepalive".
func (l *HTTPLoad) Name() string { return l.name }

// Run runs the clients until ctx ends.
func (l *HTTPLoad) Run(ctx context.Context) {
	l.cfg.runClients(func(i int) { l.client(ctx, i) })
}

func (l *HTTPLoad) client(ctx context.Context, id int) {
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: l.cfg.timeout()}).DialContext,
		DisableKeepAlives:   !l.keepAlive,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: l.cfg.timeout()}
	pace := newPacer(l.cfg.Rate)
	defer pace.stop()
	for n := int64(0); n < l.cfg.maxPerClient() && pace.wait(ctx); n++ {
		l.request(client, fmt.Sprintf("%d-%d", id, n))
	}
}

// request sends one request. It does not use the load's context: a request
// that has started runs to its answer or its timeout.
func (l *HTTPLoad) request(client *http.Client, id string) {
	var attempts atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { attempts.Add(1) }}
	target := l.url
	if l.status == 0 {
		target += "?id=" + id + "&c=" + l.name
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
		http.MethodGet, target, nil)
	if err != nil {
		panic(err) // the URL is built above from a valid address
	}
	start := time.Now()
	sample := report.Sample{At: start.Sub(l.cfg.Start), Gen: -1}
	resp, err := client.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		sample.Outcome = report.Wrong
		switch {
		case err != nil:
		case l.status != 0:
			if resp.StatusCode == l.status {
				sample.Outcome = report.OK
			}
		case resp.StatusCode == http.StatusOK:
			if gen, got, perr := proto.ParseHTTPBody(string(body)); perr == nil && got == id {
				sample.Outcome, sample.Gen = report.OK, int32(gen)
			}
		}
	}
	if err != nil {
		sample.Outcome = report.Classify(err)
	}
	sample.Latency = time.Since(start)
	sample.Retried = attempts.Load() > 1
	l.series.Add(sample)
	retried := int64(0)
	if sample.Retried {
		retried = 1
	}
	l.counts.add(1, 0, 0, retried)
}

// Result is what the load saw.
func (l *HTTPLoad) Result() report.Load { return l.counts.result(l.name, l.series.Samples()) }

// Samples are the measured requests.
func (l *HTTPLoad) Samples() []report.Sample { return l.series.Samples() }

// CheckTarget checks that addr (host:port) is a loopback address, the only
// kind a load may drive.
func CheckTarget(addr string) error { return checkLoopback(addr) }

// CheckURL checks that rawURL is an http:// URL on loopback.
func CheckURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("load: %q is not an http:// URL", rawURL)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return checkLoopback(net.JoinHostPort(u.Hostname(), port))
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("load: address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q", ErrNotLoopback, addr)
	}
	return nil
}

// Progress counts the requests measured so far and those that failed.
func (l *HTTPLoad) Progress() (measured, failed int) { return l.series.Count() }
