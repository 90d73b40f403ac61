package floor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// The same messages as Sender and Receiver with an acknowledgement, through
// package net: non-blocking sockets registered with Go's poller, where a
// wait parks the goroutine and the runtime wakes it, as it does for any
// library that takes a net.Conn. A ratio against these shows what the
// protocol and the library cost on top of package net; a ratio of these
// against the blocking floor shows what package net costs.

// NetSender answers each request on a connection with the same
// descriptors and waits for the acknowledgement.
type NetSender struct {
	conn    *net.UnixConn
	batches [][]byte
	data    [1]byte
}

// NewNetSender prepares the control messages for fds, once.
func NewNetSender(conn *net.UnixConn, fds []int) *NetSender {
	return &NetSender{conn: conn, batches: RightsBatches(fds)}
}

// Serve answers requests until the peer closes the connection (nil) or an
// error.
func (s *NetSender) Serve() error {
	var req [1]byte
	for {
		if _, err := s.conn.Read(req[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := s.Answer(); err != nil {
			return err
		}
	}
}

// Answer sends the descriptors once and waits for the acknowledgement.
func (s *NetSender) Answer() error {
	for _, oob := range s.batches {
		if _, _, err := s.conn.WriteMsgUnix(s.data[:], oob, nil); err != nil {
			return err
		}
	}
	var ack [1]byte
	if _, err := s.conn.Read(ack[:]); err != nil {
		return fmt.Errorf("floor: no acknowledgement: %w", err)
	}
	return nil
}

// ServeNetListener answers one request per connection accepted on ln, each
// connection in a goroutine of its own, until ln is closed (nil).
// ServeNetListener waits for those goroutines before it returns.
func ServeNetListener(ln *net.UnixListener, fds []int) error {
	var served sync.WaitGroup
	defer served.Wait()
	for {
		conn, err := ln.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		served.Go(func() {
			NewNetSender(conn, fds).Serve()
			conn.Close()
		})
	}
}

// NetReceiver asks for descriptors on a connection and acknowledges each
// complete answer, reusing its buffers.
type NetReceiver struct {
	conn *net.UnixConn
	oob  []byte
	req  [1]byte
	data [64]byte
	fds  []int
}

// NewNetReceiver offers a control buffer as NewReceiver does.
func NewNetReceiver(conn *net.UnixConn) *NetReceiver {
	return &NetReceiver{conn: conn, oob: make([]byte, unix.CmsgSpace((BatchSize+1)*4))}
}

// Request is Receiver.Request through package net.
func (r *NetReceiver) Request(n int) ([]int, error) {
	if _, err := r.conn.Write(r.req[:]); err != nil {
		return nil, err
	}
	r.fds = r.fds[:0]
	for len(r.fds) < n {
		_, oobn, flags, _, err := r.conn.ReadMsgUnix(r.data[:], r.oob)
		if err != nil {
			CloseAll(r.fds)
			return nil, err
		}
		if r.fds, err = takeBatch(r.fds, r.oob[:oobn], flags, n); err != nil {
			return nil, err
		}
	}
	if _, err := r.conn.Write(r.req[:]); err != nil {
		CloseAll(r.fds)
		return nil, err
	}
	return r.fds, nil
}
