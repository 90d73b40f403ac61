//go:build linux

package harness_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// The stream is a sequence of 8-byte big-endian numbers, 0, 1, 2, ...;
// the server echoes every complete record it has read.
const recordSize = 8

// Child side.

// echo echoes the complete records of a connection until paused. Bytes of
// an incomplete record stay pending: the next owner of the connection
// must start with them.
type echo struct {
	conn    net.Conn
	pausing atomic.Bool
	held    atomic.Int64 // bytes read and not echoed yet
	done    chan struct{}
	pending []byte
	err     error
}

// startEcho echoes conn's records, starting with the pending bytes a
// previous owner had read.
func startEcho(conn net.Conn, pending []byte) *echo {
	e := &echo{conn: conn}
	e.resume(pending)
	return e
}

func (e *echo) resume(pending []byte) {
	e.conn.SetReadDeadline(time.Time{})
	e.done = make(chan struct{})
	go e.loop(pending)
}

func (e *echo) loop(data []byte) {
	defer close(e.done)
	buf := make([]byte, 4096)
	for {
		if full := len(data) / recordSize * recordSize; full > 0 {
			e.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := e.conn.Write(data[:full]); err != nil {
				e.err = err
				return
			}
			data = append(data[:0], data[full:]...)
		}
		e.held.Store(int64(len(data)))
		n, err := e.conn.Read(buf)
		data = append(data, buf[:n]...)
		e.held.Store(int64(len(data)))
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && e.pausing.Load() {
				e.pending = data
			} else {
				e.err = err
			}
			return
		}
	}
}

// awaitPartial waits until the echo holds part of a record and nothing
// more, and returns how many bytes it holds. Just after a read the count
// also holds the complete records about to be echoed (5 + 8k bytes), so
// only a count below a record is settled.
func (e *echo) awaitPartial() (int, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n := e.held.Load(); n%recordSize != 0 && n < recordSize {
			return int(n), nil
		}
		if time.Now().After(deadline) {
			return 0, errors.New("no partial record within 20s")
		}
		time.Sleep(time.Millisecond)
	}
}

// pause stops the echo between two reads and returns the bytes read and
// not echoed (less than a record).
func (e *echo) pause() ([]byte, error) {
	e.pausing.Store(true)
	e.conn.SetReadDeadline(time.Unix(1, 0))
	<-e.done
	e.pausing.Store(false)
	return e.pending, e.err
}

// streamOld echoes a connection it dials to Args[1] (network Args[0]) and
// hands it over on the hand-off socket Args[2], mid-stream: the handler
// stops echoing between two reads and sends the bytes it read but could
// not echo yet as metadata. If the hand-off fails it echoes on.
func streamOld(c *harness.Child) error {
	network, addr, sock := c.Args[0], c.Args[1], c.Args[2]
	conn, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	fd, err := rawFD(conn)
	if err != nil {
		return err
	}
	e := startEcho(conn, nil)
	var pending []byte
	stop, err := offer(c, sock, false, &graceful.Server{
		Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			var err error
			if pending, err = e.pause(); err != nil {
				w.Errorf("echo: %v", err)
			}
			if err := w.WriteKind(fd, graceful.KindStream, graceful.Meta{"pending": hex.EncodeToString(pending)}); err != nil {
				w.Errorf("send the connection: %v", err)
			}
		}),
		Done: func(err error) {
			if err != nil {
				e.resume(pending)
			}
		},
	})
	if err != nil {
		e.pause()
		return err
	}
	if err := c.Control.Send("serving", listenerInfo{FD: fd}); err != nil {
		stop()
		e.pause()
		return err
	}
	return commands(c, map[string]func() error{
		"await-partial": func() error {
			n, err := e.awaitPartial()
			if err != nil {
				return err
			}
			return c.Control.Send("partial", n)
		},
		"finish": func() error {
			err := stop()
			e.pause() // echoing on if the hand-off failed
			return errors.Join(err, conn.Close())
		},
	})
}

// streamNew takes the connection from the hand-off socket Args[0] and
// echoes on, starting with the bytes the old process had read.
func streamNew(c *harness.Child) error {
	conn, got, err := receiveOne(c)
	if err != nil {
		return err
	}
	pending, err := hex.DecodeString(got.Meta["pending"])
	if err != nil {
		conn.Close()
		closeReceived([]receivedFD{got})
		return err
	}
	sc, err := graceful.FdConn(got.Num)
	if err != nil {
		conn.Close()
		return err
	}
	defer sc.Close()
	e := startEcho(sc, pending)
	if err := ready(conn); err != nil {
		e.pause()
		return err
	}
	if err := c.Control.Send("serving", nil); err != nil {
		e.pause()
		return err
	}
	return commands(c, map[string]func() error{
		"finish": func() error {
			_, err := e.pause()
			return errors.Join(err, sc.Close())
		},
	})
}

// Parent side.

// stream writes numbered records on a connection, at most window of them
// ahead of their echo, and checks that the echo returns each exactly once
// and in order. Each record is written in two parts, so that a server can
// be caught holding part of one.
type stream struct {
	conn     net.Conn
	inflight chan uint64 // records written and not yet echoed
	stop     chan struct{}
	once     sync.Once
	done     chan struct{}
	echoed   atomic.Uint64

	holdNext chan struct{} // asks the writer to stop in the middle of the next record
	held     chan struct{} // closed when it has
	release  chan struct{} // closed to let it go on

	mu  sync.Mutex
	err error
}

const (
	streamWindow = 16
	maxRecords   = 1_000_000 // bounds a stream nobody stops
)

func startStream(conn net.Conn) *stream {
	s := &stream{
		conn: conn, inflight: make(chan uint64, streamWindow), stop: make(chan struct{}), done: make(chan struct{}),
		holdNext: make(chan struct{}, 1), held: make(chan struct{}), release: make(chan struct{}),
	}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	go s.write()
	go s.read()
	DeferCleanup(s.halt)
	return s
}

// fail records the first failure and stops the writer.
func (s *stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.once.Do(func() { close(s.stop) })
}

func (s *stream) write() {
	defer close(s.inflight)
	var rec [recordSize]byte
	for seq := uint64(0); seq < maxRecords; seq++ {
		select {
		case <-s.stop:
			return
		case s.inflight <- seq:
		}
		binary.BigEndian.PutUint64(rec[:], seq)
		for i, part := range [][]byte{rec[:5], rec[5:]} {
			if _, err := s.conn.Write(part); err != nil {
				s.fail(fmt.Errorf("write record %d: %w", seq, err))
				return
			}
			if i == 0 && !s.holdHere() {
				return
			}
		}
	}
}

// holdHere waits for the release if a hold was asked for; false means
// stop writing.
func (s *stream) holdHere() bool {
	select {
	case <-s.holdNext:
	default:
		return true
	}
	close(s.held)
	select {
	case <-s.release:
		return true
	case <-s.stop:
		return false
	}
}

// holdMidRecord makes the writer stop after the first part of the next
// record, until resume.
func (s *stream) holdMidRecord() {
	GinkgoHelper()
	s.holdNext <- struct{}{}
	Eventually(s.held).Should(BeClosed())
}

func (s *stream) resume() { close(s.release) }

func (s *stream) read() {
	defer close(s.done)
	var rec [recordSize]byte
	for seq := range s.inflight {
		if s.failed() {
			continue // drain, so that the writer never blocks
		}
		if _, err := io.ReadFull(s.conn, rec[:]); err != nil {
			s.fail(fmt.Errorf("read the echo of record %d: %w", seq, err))
			continue
		}
		if got := binary.BigEndian.Uint64(rec[:]); got != seq {
			s.fail(fmt.Errorf("echo %d where record %d was due: lost, duplicated or reordered", got, seq))
			continue
		}
		s.echoed.Add(1)
	}
}

func (s *stream) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil
}

// count is how many records came back; polled by Eventually, it stops
// the polling when the stream has failed.
func (s *stream) count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		StopTrying("the stream failed").Wrap(s.err).Now()
	}
	return s.echoed.Load()
}

// halt stops writing, waits for the echo of what was written, and returns
// the first failure.
func (s *stream) halt() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

var _ = Describe("handing over an established connection", Label("harness"), harnesstest.Repeat(), func() {
	BeforeEach(func() { trackLeaks() })

	for _, network := range []string{"tcp", "unix"} {
		It("hands a "+network+" connection over mid-stream, and the peer loses, repeats and reorders nothing", func() {
			dir := tempDir()
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(dir, "peer.sock")
			}
			ln, err := net.Listen(network, addr)
			Expect(err).NotTo(HaveOccurred())
			defer ln.Close()

			old := startAccounted(harness.Cmd{Helper: "stream-old", Args: []string{network, ln.Addr().String(), socketIn(dir)}})
			ln.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(waitExit))
			peer, err := ln.Accept()
			Expect(err).NotTo(HaveOccurred())
			defer peer.Close()
			ln.Close()
			var oldInfo listenerInfo
			old.await("serving", &oldInfo)
			oldBefore := old.fd(oldInfo.FD)

			s := startStream(peer)
			Eventually(s.count).Should(BeNumerically(">=", 200))

			By("holding the stream in the middle of a record that the old process has half read")
			s.holdMidRecord()
			old.tell("await-partial", nil)
			var partial int
			old.await("partial", &partial)
			Expect(partial).To(Equal(5))

			nu := startAccounted(harness.Cmd{Helper: "stream-new", Args: []string{socketIn(dir)}})
			var got []receivedFD
			nu.await("received", &got)
			expectReceivedLike(nu, got, []harness.FD{oldBefore})
			Expect(got[0].Meta).To(HaveKeyWithValue("pending", HaveLen(2*partial)), "the bytes of the half-read record")
			atHandoff := s.count()
			nu.tell("serve", nil)
			nu.await("serving", nil)
			var handoff outcome
			old.await("handoff", &handoff)
			Expect(handoff).To(Equal(outcome{}))

			By("the new process echoes on, starting with the half-read record")
			s.resume()
			Eventually(s.count).Should(BeNumerically(">=", atHandoff+500))
			Expect(s.halt()).To(Succeed())

			old.tell("finish", nil)
			old.finish()
			nu.tell("finish", nil)
			nu.finish()
		})
	}
})
