package report

import (
	"math"
	"sort"
	"time"
)

// Percentile returns the nearest-rank p-th percentile (0 < p <= 1) of sorted,
// or 0 when sorted is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(sorted)))) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

// Summarize sorts durations in place and describes them.
func Summarize(durations []time.Duration) Summary {
	if len(durations) == 0 {
		return Summary{}
	}
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	return Summary{
		Count: len(durations),
		P50Ms: ms(Percentile(durations, 0.50)),
		P99Ms: ms(Percentile(durations, 0.99)),
		MaxMs: ms(durations[len(durations)-1]),
	}
}

// Compare sets two summaries side by side with their ratios.
func Compare(baseline, restarts Summary) LatencyCompare {
	return LatencyCompare{
		Baseline: baseline,
		Restarts: restarts,
		RatioP50: ratio(restarts.P50Ms, baseline.P50Ms),
		RatioP99: ratio(restarts.P99Ms, baseline.P99Ms),
		RatioMax: ratio(restarts.MaxMs, baseline.MaxMs),
	}
}

// PhaseLatency compares the latency of the successful samples sent during
// the baseline phase with those sent during the restart phase. Failed
// samples are counted elsewhere, not here.
func PhaseLatency(samples []Sample, ph Phases) LatencyCompare {
	var baseline, restarts []time.Duration
	for _, s := range samples {
		if s.Outcome != OK {
			continue
		}
		at := s.At.Seconds()
		switch {
		case at >= ph.BaselineStartS && at < ph.BaselineEndS:
			baseline = append(baseline, s.Latency)
		case at >= ph.RestartStartS && at < ph.RestartEndS:
			restarts = append(restarts, s.Latency)
		}
	}
	return Compare(Summarize(baseline), Summarize(restarts))
}

// CountOutcomes counts the samples that succeeded and those that failed, by
// cause.
func CountOutcomes(samples []Sample) (ok int64, failedBy map[string]int64) {
	failedBy = map[string]int64{}
	for _, s := range samples {
		if s.Outcome == OK {
			ok++
			continue
		}
		failedBy[s.Outcome.String()]++
	}
	return ok, failedBy
}

// ServedBy counts the successful samples answered by each generation.
func ServedBy(samples []Sample) map[int]int64 {
	served := map[int]int64{}
	for _, s := range samples {
		if s.Outcome == OK && s.Gen >= 0 {
			served[int(s.Gen)]++
		}
	}
	return served
}

// SummarizeMs describes a set of values already in milliseconds.
func SummarizeMs(values []float64) Summary {
	durations := make([]time.Duration, len(values))
	for i, v := range values {
		durations[i] = time.Duration(v * float64(time.Millisecond))
	}
	return Summarize(durations)
}

// RangeOf returns the smallest and largest of the values that are not
// negative (a negative count means "not reported").
func RangeOf(values []int) Range {
	r := Range{Min: -1, Max: -1}
	for _, v := range values {
		if v < 0 {
			continue
		}
		if r.Min < 0 || v < r.Min {
			r.Min = v
		}
		if v > r.Max {
			r.Max = v
		}
	}
	return r
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return math.Round(a/b*100) / 100
}
