package bench_test

import (
	"flag"
	"testing"
	"time"

	"github.com/gracefulfd/graceful/bench/internal/underload"
)

var underloadRestarts = flag.Int("underload.restarts", 20,
	"restarts in one BenchmarkUnderLoad run, one every 200 ms (cmd/restart-sim's interval)")

// BenchmarkUnderLoad restarts a demo service under cmd/restart-sim's
// default load and interval and reports what the clients saw: failed
// requests and the latency percentiles, against a baseline without
// restarts. One iteration is one whole run: use -benchtime=1x and -count.
func BenchmarkUnderLoad(b *testing.B) {
	sched := underload.Schedule{
		Restarts: *underloadRestarts,
		Interval: underload.DefaultInterval,
	}
	runs := []struct {
		name string
		run  func() (underload.Result, error)
	}{
		{"impl=baseline", func() (underload.Result, error) {
			base := sched
			base.Baseline, base.Restarts = time.Duration(sched.Restarts+1)*sched.Interval, 0
			return underload.RunGraceful(base)
		}},
		{"impl=graceful", func() (underload.Result, error) { return underload.RunGraceful(sched) }},
		{"impl=tableflip-shutdown", func() (underload.Result, error) { return underload.RunTableflip(sched, false) }},
		{"impl=tableflip-drainer", func() (underload.Result, error) { return underload.RunTableflip(sched, true) }},
	}
	for _, r := range runs {
		b.Run(r.name, func(b *testing.B) {
			var sum underload.Result
			var p50, p99 time.Duration
			for range b.N {
				res, err := r.run()
				if err != nil {
					b.Fatal(err)
				}
				if res.Requests == 0 {
					b.Fatal("no request was sent")
				}
				if res.Failed > 0 {
					b.Logf("%d of %d requests failed: %v", res.Failed, res.Requests, res.FailedBy)
				}
				sum.Requests += res.Requests
				sum.Failed += res.Failed
				sum.Restarts += res.Restarts
				sum.Refused += res.Refused
				p50 += res.P50
				p99 += res.P99
			}
			n := float64(b.N)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(sum.Requests)/n, "requests/run")
			b.ReportMetric(float64(sum.Failed)/n, "failed/run")
			b.ReportMetric(float64(sum.Restarts)/n, "restarts/run")
			b.ReportMetric(float64(sum.Refused)/n, "refused/run")
			b.ReportMetric(p50.Seconds()*1e3/n, "p50-ms")
			b.ReportMetric(p99.Seconds()*1e3/n, "p99-ms")
		})
	}
}
