package load

import (
	"bytes"
	"fmt"
	"os"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// LinesResult is what CheckLines found in the shared file.
type LinesResult struct {
	Load report.Load
	// Served counts the lines written by each generation.
	Served map[int]int64
}

// CheckLines reads the shared append-only file at path, written by writers
// line writers, whose counts of lines written (one per writer, from the
// last generation; nil when unknown) are written. Every line n of writer w
// must be there exactly once, whole, and after line n-1 of the same writer.
//
// The result counts as sent the larger of written[w] and the highest line
// number found plus one; as OK every line present once; as lost every
// number missing; as duplicated every extra copy; and as failed ("wrong")
// every torn, malformed or out-of-order line.
func CheckLines(path string, writers int, written []uint64) (LinesResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return LinesResult{}, fmt.Errorf("load: check lines: %w", err)
	}
	seen := make([]map[uint64]int, writers)
	next := make([]uint64, writers) // lowest number the writer may write next
	for w := range seen {
		seen[w] = map[uint64]int{}
	}
	res := LinesResult{Served: map[int]int64{}}
	var wrong int64
	for len(data) > 0 {
		line, rest, whole := bytes.Cut(data, []byte("\n"))
		data = rest
		l, err := proto.ParseLine(string(line))
		if !whole || err != nil || l.Writer >= writers {
			wrong++
			continue
		}
		seen[l.Writer][l.N]++
		if l.N < next[l.Writer] && seen[l.Writer][l.N] == 1 {
			wrong++ // a number the writer had already gone past: out of order
		}
		next[l.Writer] = max(next[l.Writer], l.N+1)
		res.Served[l.Gen]++
	}

	var sent, ok, lost, dup int64
	for w := range writers {
		total := next[w]
		if w < len(written) {
			total = max(total, written[w])
		}
		sent += int64(total)
		for n := range total {
			switch c := seen[w][n]; {
			case c == 0:
				lost++
			default:
				ok++
				dup += int64(c - 1)
			}
		}
	}
	failedBy := map[string]int64{}
	if wrong > 0 {
		failedBy[report.Wrong.String()] = wrong
	}
	res.Load = report.Load{
		Name: File, Sent: sent, OK: ok, Failed: wrong, FailedBy: failedBy, Lost: lost, Duplicated: dup,
	}
	return res, nil
}
