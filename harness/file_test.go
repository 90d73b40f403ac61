//go:build linux

package harness_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// Child side.

// maxLogLines bounds a log writer that nobody stops.
const maxLogLines = 1_000_000

// logLine is line n of a generation: one write, one whole line.
func logLine(generation string, n int) []byte {
	return fmt.Appendf(nil, "%s %08d\n", generation, n)
}

// appendOld opens the log Args[0] append-only, writes numbered lines to
// it without pause, and offers it on the hand-off socket Args[1]. It
// keeps writing after the hand-off, until "stop-writing".
func appendOld(c *harness.Child) error {
	f, err := os.OpenFile(c.Args[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fd, err := rawFD(f)
	if err != nil {
		return err
	}
	var (
		stopWriting = make(chan struct{})
		stopOnce    sync.Once
		written     atomic.Int64
		writing     = make(chan error, 1)
	)
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		for n := 0; n < maxLogLines && time.Now().Before(deadline); n++ {
			select {
			case <-stopWriting:
				writing <- nil
				return
			default:
			}
			if _, err := f.Write(logLine("old", n)); err != nil {
				writing <- err
				return
			}
			written.Add(1)
		}
		writing <- nil
	}()
	var writeErr error
	halt := func() error {
		stopOnce.Do(func() {
			close(stopWriting)
			writeErr = <-writing
		})
		return writeErr
	}
	stop, err := offer(c, c.Args[1], false, &graceful.Server{
		Handler: graceful.FileHandler(f, graceful.Meta{"name": "log"}),
	})
	if err != nil {
		halt()
		return err
	}
	if err := c.Control.Send("serving", listenerInfo{FD: fd}); err != nil {
		stop()
		halt()
		return err
	}
	return commands(c, map[string]func() error{
		"stop-writing": func() error {
			if err := halt(); err != nil {
				return err
			}
			return c.Control.Send("written", written.Load())
		},
		"finish": func() error {
			return errors.Join(stop(), halt(), f.Close())
		},
	})
}

// appendNew takes the log from the hand-off socket Args[0] and writes
// Args[1] numbered lines to it.
func appendNew(c *harness.Child) error {
	conn, got, err := receiveOne(c)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(got.Num), got.Meta["name"])
	defer f.Close()
	if err := ready(conn); err != nil {
		return err
	}
	lines := atoi(c.Args[1])
	for n := range lines {
		if _, err := f.Write(logLine("new", n)); err != nil {
			return err
		}
	}
	if err := c.Control.Send("written", lines); err != nil {
		return err
	}
	return commands(c, map[string]func() error{
		"finish": f.Close,
	})
}

// readerOld opens the file Args[0], reads Args[1] bytes of it, and offers
// it, at that position, on the hand-off socket Args[2].
func readerOld(c *harness.Child) error {
	f, err := os.Open(c.Args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.ReadFull(f, make([]byte, atoi(c.Args[1]))); err != nil {
		return err
	}
	fd, err := rawFD(f)
	if err != nil {
		return err
	}
	stop, err := offer(c, c.Args[2], false, &graceful.Server{
		Handler: graceful.FileHandler(f, graceful.Meta{"name": "data"}),
	})
	if err != nil {
		return err
	}
	if err := c.Control.Send("serving", listenerInfo{FD: fd}); err != nil {
		stop()
		return err
	}
	return commands(c, map[string]func() error{
		"finish": func() error { return errors.Join(stop(), f.Close()) },
	})
}

// readReport is what readerNew read.
type readReport struct {
	First string
	Lines int
}

// readerNew takes a file from the hand-off socket Args[0] and reads the
// rest of it from where it is, without seeking.
func readerNew(c *harness.Child) error {
	conn, got, err := receiveOne(c)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(got.Num), got.Meta["name"])
	defer f.Close()
	rest, err := io.ReadAll(f)
	if err != nil {
		conn.Close()
		return err
	}
	if err := ready(conn); err != nil {
		return err
	}
	first, _, _ := bytes.Cut(rest, []byte("\n"))
	if err := c.Control.Send("read", readReport{First: string(first), Lines: bytes.Count(rest, []byte("\n"))}); err != nil {
		return err
	}
	return commands(c, map[string]func() error{
		"finish": f.Close,
	})
}

// Parent side.

var logLinePattern = regexp.MustCompile(`^(old|new) (\d{8})$`)

// expectLog checks that the log holds exactly olds lines of "old" and news
// of "new", each generation's numbered from 0 in order, none torn.
func expectLog(path string, olds, news int) {
	GinkgoHelper()
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	Expect(data).To(HaveSuffix("\n"))
	next := map[string]int{"old": 0, "new": 0}
	interleaved := 0 // "old" lines after the first "new" one
	for i, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		m := logLinePattern.FindSubmatch(line)
		Expect(m).NotTo(BeNil(), "line %d is torn: %q", i, line)
		n, _ := strconv.Atoi(string(m[2]))
		Expect(n).To(Equal(next[string(m[1])]), "line %d: %q out of order", i, line)
		next[string(m[1])]++
		if string(m[1]) == "old" && next["new"] > 0 {
			interleaved++
		}
	}
	GinkgoWriter.Printf("%d old and %d new lines, %d old ones written after the first new one\n", next["old"], next["new"], interleaved)
	Expect(next).To(Equal(map[string]int{"old": olds, "new": news}))
}

var _ = Describe("handing over files", Label("harness"), harnesstest.Repeat(), func() {
	BeforeEach(func() { trackLeaks() })

	It("hands over an append-only log both generations write to at once, and no line is lost or torn", func() {
		dir := tempDir()
		log := filepath.Join(dir, "log")
		Expect(os.WriteFile(log, nil, 0o600)).To(Succeed())
		old := startAccounted(harness.Cmd{Helper: "append-old", Args: []string{log, socketIn(dir)}})
		var oldInfo listenerInfo
		old.await("serving", &oldInfo)
		oldBefore := old.fd(oldInfo.FD)

		const newLines = 2000
		nu := startAccounted(harness.Cmd{Helper: "append-new", Args: []string{socketIn(dir), strconv.Itoa(newLines)}})
		var got []receivedFD
		nu.await("received", &got)
		expectReceivedLike(nu, got, []harness.FD{oldBefore})
		Expect(nu.fd(got[0].Num).Flags & os.O_APPEND).NotTo(BeZero())
		nu.tell("serve", nil)
		var written int
		nu.await("written", &written)
		Expect(written).To(Equal(newLines))
		var handoff outcome
		old.await("handoff", &handoff)
		Expect(handoff).To(Equal(outcome{}))

		var oldWritten int
		old.tell("stop-writing", nil)
		old.await("written", &oldWritten)

		By("both descriptors share one offset, at the end of the log")
		st, err := os.Stat(log)
		Expect(err).NotTo(HaveOccurred())
		Expect(old.fd(oldInfo.FD).Pos).To(Equal(st.Size()))
		Expect(nu.fd(got[0].Num).Pos).To(Equal(st.Size()))

		old.tell("finish", nil)
		old.finish()
		nu.tell("finish", nil)
		nu.finish()
		expectLog(log, oldWritten, newLines)
	})

	It("hands over a file at its read position, and the new process reads on from there", func() {
		dir := tempDir()
		path := filepath.Join(dir, "data")
		var content bytes.Buffer
		for i := range 1000 {
			fmt.Fprintf(&content, "line %04d\n", i)
		}
		Expect(os.WriteFile(path, content.Bytes(), 0o600)).To(Succeed())
		const readFirst = 100 * len("line 0000\n")

		old := startAccounted(harness.Cmd{Helper: "reader-old", Args: []string{path, strconv.Itoa(readFirst), socketIn(dir)}})
		var oldInfo listenerInfo
		old.await("serving", &oldInfo)
		oldBefore := old.fd(oldInfo.FD)
		Expect(old.fd(oldInfo.FD).Pos).To(Equal(int64(readFirst)))

		nu := startAccounted(harness.Cmd{Helper: "reader-new", Args: []string{socketIn(dir)}})
		var got []receivedFD
		nu.await("received", &got)
		expectReceivedLike(nu, got, []harness.FD{oldBefore})
		Expect(nu.fd(got[0].Num).Pos).To(Equal(int64(readFirst)))
		nu.tell("serve", nil)
		var read readReport
		nu.await("read", &read)
		Expect(read).To(Equal(readReport{First: "line 0100", Lines: 900}))
		var handoff outcome
		old.await("handoff", &handoff)
		Expect(handoff).To(Equal(outcome{}))
		Expect(old.fd(oldInfo.FD).Pos).To(Equal(int64(content.Len())), "the old process sees the offset move: it is shared")

		old.tell("finish", nil)
		old.finish()
		nu.tell("finish", nil)
		nu.finish()
	})
})
