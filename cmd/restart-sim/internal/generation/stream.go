//go:build linux

package generation

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/graceful"
)

// stream serves one long-lived TCP connection of the stream load. Its state
// (the next frame number expected, the frames answered so far, and the bytes
// of a frame read only in part) moves with the descriptor to the next
// generation in the descriptor's metadata.
//
// Before a hand-off the loop is paused between two reads, so that no byte is
// read by the old process once the descriptor has been sent; bytes the peer
// sends meanwhile wait in the socket for whichever process serves next.
type stream struct {
	conn   net.Conn
	gen    uint32
	served *atomic.Int64

	// Owned by the loop; read by others only while it is paused.
	next, count uint64
	buf         [proto.StreamRequestSize]byte
	have        int
	// DefectStreamDrop and DefectStreamRepeat: what to do wrong with the
	// next frame.
	dropNext, repeatNext bool

	pausing atomic.Bool
	paused  chan struct{} // the loop stopped reading
	resume  chan bool     // true: read again; false: stop, the connection was handed over
	done    chan struct{} // closed when the loop returns
}

func newStream(conn net.Conn, gen int, served *atomic.Int64) *stream {
	return &stream{
		conn: conn, gen: uint32(gen), served: served,
		paused: make(chan struct{}, 1), resume: make(chan bool, 1), done: make(chan struct{}),
	}
}

// restoreStream rebuilds a stream handed over with meta.
func restoreStream(conn net.Conn, gen int, served *atomic.Int64, meta graceful.Meta) (*stream, error) {
	s := newStream(conn, gen, served)
	var err error
	if s.next, err = strconv.ParseUint(meta[metaNext], 10, 64); err != nil {
		return nil, fmt.Errorf("stream metadata %q: %w", metaNext, err)
	}
	if s.count, err = strconv.ParseUint(meta[metaCount], 10, 64); err != nil {
		return nil, fmt.Errorf("stream metadata %q: %w", metaCount, err)
	}
	partial, err := hex.DecodeString(meta[metaPartial])
	if err != nil || len(partial) >= len(s.buf) {
		return nil, fmt.Errorf("stream metadata %q: %q", metaPartial, meta[metaPartial])
	}
	s.have = copy(s.buf[:], partial)
	return s, nil
}

// meta describes the paused stream for its next owner.
func (s *stream) meta() graceful.Meta {
	return graceful.Meta{
		metaRole:    roleStream,
		metaNext:    strconv.FormatUint(s.next, 10),
		metaCount:   strconv.FormatUint(s.count, 10),
		metaPartial: hex.EncodeToString(s.buf[:s.have]),
	}
}

// run answers frames until the peer closes, the connection breaks, or a
// pause ends with the connection handed over; then it closes this
// process's descriptor (the successor, if any, holds its own).
func (s *stream) run() {
	defer close(s.done)
	defer s.conn.Close()
	reply := make([]byte, proto.StreamReplySize)
	for {
		n, err := s.conn.Read(s.buf[s.have:])
		s.have += n
		if s.have == len(s.buf) {
			if werr := s.answer(reply); werr != nil {
				return
			}
		}
		if err == nil {
			continue
		}
		if !s.pausing.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
			return // the peer closed, or the connection broke
		}
		s.paused <- struct{}{}
		if !<-s.resume {
			return
		}
	}
}

func (s *stream) answer(reply []byte) error {
	s.have = 0
	if s.dropNext {
		s.dropNext = false
		return nil
	}
	seq, err := proto.ParseStreamRequest(s.buf[:])
	status := uint32(proto.StatusOK)
	if err != nil || seq != s.next {
		status = proto.StatusOutOfOrder
	} else {
		s.next++
	}
	s.count++
	proto.PutStreamReply(reply, proto.StreamReply{Seq: seq, Count: s.count, Gen: s.gen, Status: status})
	if _, err := s.conn.Write(reply); err != nil {
		return err
	}
	if s.repeatNext {
		s.repeatNext = false
		if _, err := s.conn.Write(reply); err != nil {
			return err
		}
	}
	s.served.Add(1)
	return nil
}

// pause stops the loop between two reads. It reports false when the loop
// has ended (the connection is gone); a loop that does not stop within
// timeout (stuck writing to a peer that does not read) has its connection
// closed, and pause reports false too.
func (s *stream) pause(timeout time.Duration) bool {
	s.pausing.Store(true)
	s.conn.SetReadDeadline(time.Unix(1, 0)) // wakes a pending Read at once
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.paused:
		return true
	case <-s.done:
	case <-t.C:
		s.conn.Close()
		s.resume <- false // in case it paused just now
		<-s.done
	}
	return false
}

// proceed ends a successful pause: keep true reads on, false stops the loop
// for good (the connection was handed over).
func (s *stream) proceed(keep bool) {
	s.conn.SetReadDeadline(time.Time{}) // the loop is waiting: no race
	s.pausing.Store(false)
	s.resume <- keep
}
