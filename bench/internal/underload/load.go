// Package underload restarts a demo HTTP service again and again while
// clients load it, and counts what the clients lost: a graceful demo
// (listener handed over by graceful, old process drained with
// graceful.HTTPDrainer) and tableflip demos (one upgrade cycle per
// restart), with the load and schedule of cmd/restart-sim's defaults.
//
// cmd/restart-sim's load generator lives in an internal package that this
// module cannot import, so Load below is a minimal loop with the same
// parameters: DefaultClients clients, each pacing DefaultRate requests a
// second, a new TCP connection per request (no keep-alive), each request
// bounded by DefaultRequestTimeout, the whole run bounded in time and
// count.
package underload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The schedule and load of cmd/restart-sim's defaults.
const (
	DefaultInterval       = 200 * time.Millisecond
	DefaultClients        = 4
	DefaultRate           = 200 // requests a second per client
	DefaultRequestTimeout = 2 * time.Second
	// maxPerClient bounds each client's requests whatever the duration.
	maxPerClient = 1_000_000
)

// Result is what the clients saw in one run.
type Result struct {
	Requests int
	Failed   int
	FailedBy map[string]int
	P50, P99 time.Duration
	Restarts int // hand-offs completed
	Refused  int // restarts the demo refused (tableflip: parent still draining)
}

// Load runs the clients against addr until ctx ends and returns what
// they saw.
func Load(ctx context.Context, addr string) Result {
	if !isLoopback(addr) {
		panic("underload: not a loopback address: " + addr)
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		res       = Result{FailedBy: map[string]int{}}
		wg        sync.WaitGroup
	)
	for range DefaultClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transport := &http.Transport{DisableKeepAlives: true}
			defer transport.CloseIdleConnections()
			client := &http.Client{Transport: transport, Timeout: DefaultRequestTimeout}
			tick := time.NewTicker(time.Second / DefaultRate)
			defer tick.Stop()
			for n := 0; n < maxPerClient; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				start := time.Now()
				err := get(client, "http://"+addr+"/")
				took := time.Since(start)
				mu.Lock()
				res.Requests++
				if err != nil {
					res.Failed++
					res.FailedBy[classify(err)]++
				} else {
					latencies = append(latencies, took)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(latencies)
	res.P50 = percentile(latencies, 0.50)
	res.P99 = percentile(latencies, 0.99)
	return res
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "gen ") {
		return fmt.Errorf("status %d, body %q", resp.StatusCode, body)
	}
	return nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "EOF"):
		return "eof"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
