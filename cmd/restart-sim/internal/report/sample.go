package report

import (
	"errors"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Outcome is how one request, frame or datagram ended.
type Outcome uint8

// The outcomes. Everything but OK is a failure; the names are those of the
// report's failed_by keys.
const (
	OK      Outcome = iota
	Refused         // connection refused: nobody was listening
	Reset           // connection reset or broken pipe
	EOF             // the peer closed before answering
	Timeout         // no answer within the request timeout
	Wrong           // an answer that does not match the request
	Other           // any other error
)

var outcomeNames = [...]string{"ok", "refused", "reset", "eof", "timeout", "wrong", "other"}

// Causes lists the failure causes in report order.
var Causes = []Outcome{Refused, Reset, EOF, Timeout, Wrong, Other}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "other"
}

// Classify maps an error from a network call to the cause the report counts.
func Classify(err error) Outcome {
	var netErr net.Error
	switch {
	case err == nil:
		return OK
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return EOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return Timeout
	case strings.Contains(err.Error(), "EOF"):
		// net/http reports a connection closed mid-response with text only.
		return EOF
	}
	return Other
}

// Sample is one measured request.
type Sample struct {
	At      time.Duration // when it was sent, since the run started
	Latency time.Duration
	Outcome Outcome
	Gen     int32 // generation that answered; -1 when unknown
	Retried bool  // HTTP: net/http sent the request a second time
}

// Series collects the samples of one load; safe for concurrent use.
type Series struct {
	mu      sync.Mutex
	samples []Sample
	failed  int
}

// Add records one sample.
func (s *Series) Add(sample Sample) {
	s.mu.Lock()
	s.samples = append(s.samples, sample)
	if sample.Outcome != OK {
		s.failed++
	}
	s.mu.Unlock()
}

// Count returns the number of samples so far and how many failed, without
// copying them.
func (s *Series) Count() (n, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.samples), s.failed
}

// Samples returns a copy of the samples so far, ordered by At.
func (s *Series) Samples() []Sample {
	s.mu.Lock()
	out := append([]Sample(nil), s.samples...)
	s.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}
