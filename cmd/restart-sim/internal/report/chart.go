package report

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// ErrChartFormat is returned for a chart file name whose extension names no
// format the chart can be saved in.
var ErrChartFormat = errors.New("report: chart file must end in .svg, .png or .pdf")

// ChartFormatOK tells whether path names a format SaveChart can write.
func ChartFormatOK(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg", ".png", ".pdf":
		return true
	}
	return false
}

var (
	colorP50      = color.RGBA{R: 60, G: 120, B: 200, A: 255}
	colorP99      = color.RGBA{R: 230, G: 130, B: 20, A: 255}
	colorMax      = color.RGBA{R: 150, G: 150, B: 150, A: 255}
	colorRestart  = color.RGBA{R: 170, G: 215, B: 170, A: 255}
	colorRollback = color.RGBA{R: 220, G: 30, B: 30, A: 255}
	colorPhase    = color.RGBA{R: 40, G: 40, B: 160, A: 255}
)

// maxMarkers is the most restart markers a chart draws.
const maxMarkers = 150

// SaveChart draws latency over time (p50, p99 and max of each time bucket,
// all loads together) with a marker at every restart attempt (green when it
// succeeded, red when it was rolled back or failed; past maxMarkers
// attempts only the red ones), a dashed line where the restart phase begins,
// and a red cross for every failed request. The format
// follows the extension of path: .svg, .png or .pdf.
func SaveChart(path string, samples []Sample, r *Report) error {
	if !ChartFormatOK(path) {
		return ErrChartFormat
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("restart-sim: latency over time, %d restarts every %s",
		r.Restarts.Done, msDuration(r.Config.IntervalMs))
	p.X.Label.Text = "time since start (s)"
	p.Y.Label.Text = "latency (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true

	buckets := bucketize(samples, bucketWidth(r.Phases.EndS))
	if len(buckets.p50) == 0 {
		return fmt.Errorf("report: no successful samples to chart")
	}
	lo, hi := buckets.yRange()
	hi *= 4 // room for the legend above the data

	// Markers first, so that the latency lines are drawn over them. Past
	// maxMarkers restarts their markers would only paint the phase green:
	// then only the failed ones are drawn.
	many := len(r.Restarts.Attempts) > maxMarkers
	var ok, rolledBack bool
	for _, a := range r.Restarts.Attempts {
		if many && a.OK {
			continue
		}
		c, width := colorRestart, vg.Points(0.8)
		if !a.OK {
			c, width = colorRollback, vg.Points(1.2)
		}
		line, err := vertical(a.AtS, lo, hi, c, width, nil)
		if err != nil {
			return err
		}
		p.Add(line)
		switch {
		case a.OK && !ok:
			ok = true
			p.Legend.Add("restart", line)
		case !a.OK && !rolledBack:
			rolledBack = true
			p.Legend.Add("failed or rolled-back restart", line)
		}
	}
	if r.Phases.RestartStartS > 0 {
		line, err := vertical(r.Phases.RestartStartS, lo, hi, colorPhase, vg.Points(1.2), []vg.Length{vg.Points(5), vg.Points(3)})
		if err != nil {
			return err
		}
		p.Add(line)
		label := "restart phase begins"
		if many {
			label = fmt.Sprintf("restart phase begins (%d restarts, markers omitted)", r.Restarts.Done)
		}
		p.Legend.Add(label, line)
	}
	for _, l := range []struct {
		name  string
		xys   plotter.XYs
		color color.Color
	}{{"max", buckets.max, colorMax}, {"p99", buckets.p99, colorP99}, {"p50", buckets.p50, colorP50}} {
		line, err := plotter.NewLine(l.xys)
		if err != nil {
			return err
		}
		line.Color = l.color
		line.Width = vg.Points(1)
		p.Add(line)
		p.Legend.Add(l.name, line)
	}
	if len(buckets.failed) > 0 {
		scatter, err := plotter.NewScatter(buckets.failed)
		if err != nil {
			return err
		}
		scatter.GlyphStyle = draw.GlyphStyle{Color: colorRollback, Radius: vg.Points(3), Shape: draw.CrossGlyph{}}
		p.Add(scatter)
		p.Legend.Add("failed request", scatter)
	}
	p.Y.Min, p.Y.Max = lo, hi
	return p.Save(30*vg.Centimeter, 13*vg.Centimeter, path)
}

func vertical(x, lo, hi float64, c color.Color, width vg.Length, dashes []vg.Length) (*plotter.Line, error) {
	line, err := plotter.NewLine(plotter.XYs{{X: x, Y: lo}, {X: x, Y: hi}})
	if err != nil {
		return nil, err
	}
	line.Color = c
	line.Width = width
	line.Dashes = dashes
	return line, nil
}

// bucketWidth keeps the chart at a few hundred points whatever the length.
func bucketWidth(totalS float64) time.Duration {
	width := time.Duration(totalS / 400 * float64(time.Second))
	return max(width, 100*time.Millisecond)
}

type chartBuckets struct {
	p50, p99, max, failed plotter.XYs
}

func bucketize(samples []Sample, width time.Duration) chartBuckets {
	var b chartBuckets
	var current []time.Duration
	bucket := time.Duration(-1)
	flush := func() {
		if len(current) == 0 {
			return
		}
		s := Summarize(current)
		x := (bucket*width + width/2).Seconds()
		b.p50 = append(b.p50, plotter.XY{X: x, Y: positive(s.P50Ms)})
		b.p99 = append(b.p99, plotter.XY{X: x, Y: positive(s.P99Ms)})
		b.max = append(b.max, plotter.XY{X: x, Y: positive(s.MaxMs)})
		current = current[:0]
	}
	for _, s := range samples { // samples are ordered by At
		if s.Outcome != OK {
			b.failed = append(b.failed, plotter.XY{X: s.At.Seconds(), Y: positive(ms(s.Latency))})
			continue
		}
		if n := s.At / width; n != bucket {
			flush()
			bucket = n
		}
		current = append(current, s.Latency)
	}
	flush()
	return b
}

// yRange spans every point drawn, with some room, for a log axis.
func (b chartBuckets) yRange() (lo, hi float64) {
	lo, hi = math.Inf(1), 0
	for _, set := range []plotter.XYs{b.p50, b.max, b.failed} {
		for _, xy := range set {
			lo = math.Min(lo, xy.Y)
			hi = math.Max(hi, xy.Y)
		}
	}
	return lo / 1.5, hi * 1.5
}

// positive keeps a value drawable on a log axis.
func positive(v float64) float64 {
	return math.Max(v, 0.001)
}
