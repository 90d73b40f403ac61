//go:build linux

package harness

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Errors of the control channel, returned wrapped with detail.
var (
	// ErrControlClosed: the other end closed the channel (a child that
	// exited closes it).
	ErrControlClosed = errors.New("harness: control channel closed by the peer")
	// ErrPeerFailed: the other end sent an "error" message.
	ErrPeerFailed = errors.New("harness: peer reported an error")
	// ErrUnexpected: a message of another type than the one expected.
	ErrUnexpected = errors.New("harness: unexpected control message")
	// ErrNoControl: this process was not started with a control channel.
	ErrNoControl = errors.New("harness: no control channel")
)

// ErrorType is the type of the message Fail sends and Expect turns into an
// error wrapping ErrPeerFailed.
const ErrorType = "error"

// Msg is one message of a control channel: one line of JSON.
type Msg struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Decode unmarshals the message's data into v.
func (m Msg) Decode(v any) error {
	if len(m.Data) == 0 {
		return fmt.Errorf("harness: %q message has no data", m.Type)
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return fmt.Errorf("harness: decode %q message: %w", m.Type, err)
	}
	return nil
}

func (m Msg) String() string {
	if len(m.Data) == 0 {
		return m.Type
	}
	return m.Type + " " + string(m.Data)
}

// Control is one end of a control channel between a parent and a child: a
// connected unix stream socket carrying Msg values as JSON lines. Every
// read and write has a deadline. Send and Recv are each safe for concurrent
// use. After a failed Recv (a timeout included) the channel may have lost
// part of a line: treat it as broken.
type Control struct {
	// Timeout bounds each Send and each Recv; 0 means DefaultTimeout.
	// Set it while no other goroutine uses the channel.
	Timeout time.Duration

	name string
	conn *net.UnixConn
	wmu  sync.Mutex
	rmu  sync.Mutex
	r    *bufio.Reader
}

// newControl wraps a connected unix stream socket; it takes ownership of
// fd, closing it on error too.
func newControl(fd int, name string) (*Control, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f) // a dup: f is closed right after
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("harness: %s: %w", name, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("harness: %s is a %T, not a unix socket", name, c)
	}
	return &Control{name: name, conn: uc, r: bufio.NewReader(uc)}, nil
}

// ChildControl opens the control channel the harness gave this process
// (see Cmd.Control) and removes ControlEnv and HelperEnv from the
// environment, so that grandchildren inherit neither. The descriptor is
// made close-on-exec for the same reason. It returns an error wrapping
// ErrNoControl when there is none. Helpers get theirs from Child.Control.
func ChildControl() (*Control, error) {
	v, ok := os.LookupEnv(ControlEnv)
	os.Unsetenv(ControlEnv)
	os.Unsetenv(HelperEnv)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not set", ErrNoControl, ControlEnv)
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("%w: %s=%q", ErrNoControl, ControlEnv, v)
	}
	unix.CloseOnExec(fd)
	return newControl(fd, "control")
}

func (c *Control) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// Send writes one message of type typ whose data is data marshalled to
// JSON (no data when nil).
func (c *Control) Send(typ string, data any) error {
	m := Msg{Type: typ}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return fmt.Errorf("harness: encode %q message: %w", typ, err)
		}
		m.Data = b
	}
	line, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("harness: encode %q message: %w", typ, err)
	}
	line = append(line, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout()))
	if _, err := c.conn.Write(line); err != nil {
		return c.wrap("send "+typ, err)
	}
	return nil
}

// Fail sends err's text as a message of type ErrorType.
func (c *Control) Fail(err error) error {
	return c.Send(ErrorType, err.Error())
}

// Recv reads the next message, waiting at most Timeout.
func (c *Control) Recv() (Msg, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.conn.SetReadDeadline(time.Now().Add(c.timeout()))
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return Msg{}, c.wrap("receive", err)
	}
	var m Msg
	if err := json.Unmarshal(line, &m); err != nil {
		return Msg{}, fmt.Errorf("harness: %s: bad message %q: %w", c.name, line, err)
	}
	return m, nil
}

// Expect reads the next message and checks that its type is typ, then
// decodes its data into data unless data is nil. A message of type
// ErrorType gives an error wrapping ErrPeerFailed with the peer's text;
// any other type gives ErrUnexpected, naming what came instead.
func (c *Control) Expect(typ string, data any) error {
	m, err := c.Recv()
	if err != nil {
		return fmt.Errorf("%w (waiting for %q)", err, typ)
	}
	if m.Type == ErrorType && typ != ErrorType {
		var text string
		if json.Unmarshal(m.Data, &text) != nil {
			text = string(m.Data)
		}
		return fmt.Errorf("%w: %s: %s (waiting for %q)", ErrPeerFailed, c.name, text, typ)
	}
	if m.Type != typ {
		return fmt.Errorf("%w: %s: got %q, want %q", ErrUnexpected, c.name, m, typ)
	}
	if data != nil {
		return m.Decode(data)
	}
	return nil
}

// Close closes this end of the channel.
func (c *Control) Close() error { return c.conn.Close() }

func (c *Control) wrap(op string, err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: %s: %s: nothing within %v", ErrTimeout, c.name, op, c.timeout())
	case errors.Is(err, io.EOF) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET):
		return fmt.Errorf("%w: %s: %s: %w", ErrControlClosed, c.name, op, err)
	}
	return fmt.Errorf("harness: %s: %s: %w", c.name, op, err)
}
