//go:build linux

package graceful

import (
	"fmt"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

// lines collects what a printf-style logger is given, one string a call.
type lines struct{ got []string }

func (l *lines) Debugf(format string, args ...any) {
	l.got = append(l.got, fmt.Sprintf(format, args...))
}
func (l *lines) Infof(format string, args ...any) {
	l.got = append(l.got, fmt.Sprintf(format, args...))
}
func (l *lines) Errorf(format string, args ...any) {
	l.got = append(l.got, fmt.Sprintf(format, args...))
}

var _ = ginkgo.Describe("the flood log", func() {
	ginkgo.It("writes one line an interval, the next counting those it did not write, and flush the rest once", func() {
		out := &lines{}
		l := logger{NewSlogLogger(out)}
		var f floodLog
		f.note(l, "failed", "n", 1)
		f.note(l, "failed", "n", 2) // within the interval: counted
		f.note(l, "failed", "n", 3)
		gomega.Expect(out.got).To(gomega.Equal([]string{"failed n=1"}))

		f.next = time.Now().Add(-time.Nanosecond) // the interval is over
		f.note(l, "failed", "n", 4)
		gomega.Expect(out.got).To(gomega.Equal([]string{"failed n=1", "failed n=4 unlogged=2"}))

		f.note(l, "failed", "n", 5)
		f.flush(l)
		f.flush(l) // nothing more to count
		gomega.Expect(out.got).To(gomega.Equal([]string{
			"failed n=1", "failed n=4 unlogged=2",
			"graceful: more connections failed before their HELLO unlogged=1",
		}))
	})
})

var _ = ginkgo.Describe("NewSlogLogger's attributes", func() {
	ginkgo.It("name those added inside a group after it, as the record's own", func() {
		out := &lines{}
		log := NewSlogLogger(out)
		log.With("top", 0).WithGroup("g").With("k", "v").WithGroup("h").Info("m", "a", 1)
		log.WithGroup("").With("plain", true).Error("e")
		gomega.Expect(out.got).To(gomega.Equal([]string{"m top=0 g.k=v g.h.a=1", "e plain=true"}))
	})
})
