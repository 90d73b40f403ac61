//go:build linux

package control

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Message types, in the order a generation sends them.
const (
	// Receiving: the hand-off session has begun and the first descriptor is
	// in (sent only in the "kill" fault mode, so the supervisor can kill
	// the process mid-handoff).
	Receiving = "receiving"
	// Received: the whole set is in and acknowledged; Fds counts the open
	// descriptors at that point, before serving, less the established
	// stream connections received (their number varies from one hand-off
	// to the next) and the hand-off connection (a first start has none).
	Received = "received"
	// Ready: serving, READY sent to the old generation and the supervisor;
	// the addresses are set.
	Ready = "ready"
	// Handoff: this generation handed its set to a successor (OK) or the
	// attempt failed and it goes on serving (OK false, Err says why).
	Handoff = "handoff"
	// Exit: drained, about to exit; Fds counts the open descriptors, Served
	// what this generation answered.
	Exit = "exit"
)

// Message is one report.
type Message struct {
	Type string `json:"type"`
	PID  int    `json:"pid"` // the generation's process id

	HTTPAddr   string `json:"http_addr,omitempty"`
	StreamAddr string `json:"stream_addr,omitempty"`
	UDPAddr    string `json:"udp_addr,omitempty"`

	Fds       int              `json:"fds,omitempty"`
	SessionMs float64          `json:"session_ms,omitempty"`
	OK        bool             `json:"ok,omitempty"`
	Err       string           `json:"err,omitempty"`
	Served    map[string]int64 `json:"served,omitempty"`
	// LinesNext is, for each line writer, the number of the next line it
	// would write: the count of lines written so far by all generations.
	LinesNext []uint64 `json:"lines_next,omitempty"`
}

// maxMessage bounds one datagram.
const maxMessage = 64 << 10

// Sink collects the reports sent to its socket, by process id.
type Sink struct {
	conn *net.UnixConn
	done chan struct{}

	mu      sync.Mutex
	byPID   map[int][]Message
	changed chan struct{} // closed and replaced on every report
}

// Listen creates the socket at path (in a private directory) and collects
// what arrives there until Close.
func Listen(path string) (*Sink, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		conn.Close()
		return nil, err
	}
	s := &Sink{conn: conn, done: make(chan struct{}), byPID: map[int][]Message{}, changed: make(chan struct{})}
	go s.read()
	return s, nil
}

func (s *Sink) read() {
	defer close(s.done)
	buf := make([]byte, maxMessage)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return // closed
		}
		var m Message
		if json.Unmarshal(buf[:n], &m) != nil {
			continue
		}
		s.mu.Lock()
		s.byPID[m.PID] = append(s.byPID[m.PID], m)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// Close stops collecting.
func (s *Sink) Close() {
	s.conn.Close()
	<-s.done
}

// Last returns the last report of type typ from process pid.
func (s *Sink) Last(pid int, typ string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msgs := s.byPID[pid]
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Type == typ {
			return msgs[i], true
		}
	}
	return Message{}, false
}

// Await waits until process pid has sent a report of type typ, at most d.
func (s *Sink) Await(pid int, typ string, d time.Duration) (Message, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if m, ok := s.Last(pid, typ); ok {
			return m, true
		}
		select {
		case <-changed:
		case <-t.C:
			return Message{}, false
		}
	}
}

// Reporter sends a generation's reports.
type Reporter struct {
	conn *net.UnixConn
	pid  int
}

// Dial connects to the sink at path.
func Dial(path string) (*Reporter, error) {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	return &Reporter{conn: conn, pid: os.Getpid()}, nil
}

// Send sends m as a report of type typ.
func (r *Reporter) Send(typ string, m Message) error {
	m.Type, m.PID = typ, r.pid
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(data) > maxMessage {
		return fmt.Errorf("control: report of %d bytes", len(data))
	}
	_, err = r.conn.Write(data)
	return err
}

// Close closes the reporter's socket.
func (r *Reporter) Close() error { return r.conn.Close() }
