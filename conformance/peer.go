package conformance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// violation is a rule of the protocol the implementation broke, as the
// suite's own end of the socket saw it.
type violation struct {
	ID  string // requirement
	Msg string
}

func (v violation) String() string { return "[" + v.ID + "] " + v.Msg }

// arrived is a descriptor the suite received, with where in the byte
// stream it came: the first byte of the read that returned it. Headers are
// read one byte per recvmsg, payloads in reads that never cross the end of
// their frame, so that "came with the frame's first byte or earlier"
// (TRN-3) can be told from "came later".
type arrived struct {
	fd int
	at int
}

// inFrame is one frame the suite read.
type inFrame struct {
	Offset  int // stream offset of its first byte
	Header  wire.Header
	Payload []byte
	Fds     []arrived // a BATCH frame's descriptors, by the queue rule
}

// wirePeer is the suite's own end of a protocol connection, speaking with
// plain sendmsg/recvmsg so that it can break any rule on purpose and check
// every byte the implementation sends.
type wirePeer struct {
	c    *net.UnixConn
	wait time.Duration

	off      int       // bytes read so far
	queue    []arrived // received, not yet taken by a BATCH
	received []int     // every descriptor received, closed by close()
	oob      []byte
	viol     []violation
}

func newWirePeer(c *net.UnixConn, wait time.Duration) *wirePeer {
	return &wirePeer{c: c, wait: wait, oob: make([]byte, 16<<10)}
}

func (p *wirePeer) violate(id, format string, args ...any) {
	p.viol = append(p.viol, violation{id, fmt.Sprintf(format, args...)})
}

// close closes the connection and every descriptor received on it.
func (p *wirePeer) close() {
	p.c.Close()
	for _, fd := range p.received {
		unix.Close(fd)
	}
	p.received, p.queue = nil, nil
}

// send writes data with fds attached, in one sendmsg (the rest, if the
// kernel took only part, with plain writes).
func (p *wirePeer) send(data []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return p.sendOOB(data, oob)
}

// sendOOB writes data with the control data oob, as it is.
func (p *wirePeer) sendOOB(data, oob []byte) error {
	p.c.SetWriteDeadline(time.Now().Add(p.wait))
	n, _, err := p.c.WriteMsgUnix(data, oob, nil)
	if err == nil && n < len(data) {
		_, err = p.c.Write(data[n:])
	}
	return err
}

// sendSplit writes data one byte per sendmsg, with fds attached to the byte
// at offset at.
func (p *wirePeer) sendSplit(data []byte, at int, fds ...int) error {
	return p.trickle(data, at, 0, fds...)
}

// trickle writes data one byte per sendmsg, one every interval, with fds
// attached to the byte at offset at: a peer that is slow, not silent. It
// stops at the first write that fails (the implementation gave up). An
// interval of 0 sends the bytes one after another at once.
func (p *wirePeer) trickle(data []byte, at int, interval time.Duration, fds ...int) error {
	var tick <-chan time.Time // none: one byte after another at once
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for i := range data {
		if i > 0 && tick != nil {
			<-tick
		}
		var err error
		if i == at {
			err = p.send(data[i:i+1], fds...)
		} else {
			err = p.send(data[i : i+1])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// closeWrite ends the suite's side of the stream.
func (p *wirePeer) closeWrite() error { return p.c.CloseWrite() }

// read reads up to n bytes (at least 1) with one recvmsg and queues the
// descriptors that came with them.
func (p *wirePeer) read(n int) ([]byte, error) {
	buf := make([]byte, n)
	p.c.SetReadDeadline(time.Now().Add(p.wait))
	got, oobn, flags, _, err := p.c.ReadMsgUnix(buf, p.oob)
	if oobn > 0 {
		p.takeControl(p.oob[:oobn])
	}
	if flags&unix.MSG_CTRUNC != 0 {
		p.violate("TRN-3", "control data truncated at the suite's end (%d bytes of buffer)", len(p.oob))
	}
	if got > 0 {
		p.off += got
		return buf[:got], nil
	}
	if err == nil {
		err = io.EOF
	}
	return nil, err
}

func (p *wirePeer) takeControl(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		p.violate("TRN-3", "unparsable control data: %v", err)
		return
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			p.violate("TRN-3", "bad SCM_RIGHTS message: %v", err)
			continue
		}
		p.received = append(p.received, fds...)
		for _, fd := range fds {
			p.queue = append(p.queue, arrived{fd: fd, at: p.off})
		}
	}
}

// errMidFrame is end of stream inside a frame.
var errMidFrame = errors.New("end of stream inside a frame")

// readFull reads exactly n bytes in reads of at most chunk bytes.
func (p *wirePeer) readFull(n, chunk int) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		b, err := p.read(min(chunk, n-len(out)))
		out = append(out, b...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// readFrame reads one frame: its header one byte per read, its payload
// in reads that end at its last byte. It checks the header against the
// spec and records what it breaks; it returns an error when it cannot go
// on (end of stream, deadline, a header it cannot trust).
func (p *wirePeer) readFrame() (inFrame, error) {
	f := inFrame{Offset: p.off}
	head, err := p.readFull(wire.HeaderSize, 1)
	if err != nil {
		if len(head) > 0 && errors.Is(err, io.EOF) {
			return f, fmt.Errorf("%w: %d header bytes", errMidFrame, len(head))
		}
		return f, err
	}
	h, herr := wire.ParseHeader(head)
	f.Header = h
	if herr != nil {
		id := "FRM-3"
		switch {
		case h.Flags != 0:
			id = "FRM-2"
		case h.Length > wire.MaxPayload, errors.Is(herr, wire.ErrTooLarge):
			id = "FRM-4"
		case h.Type == wire.TypeBatch && h.NFds > wire.MaxFdsPerBatch:
			id = "SND-3"
		}
		p.violate(id, "frame at offset %d: % x: %v", f.Offset, head, herr)
		return f, herr
	}
	f.Payload, err = p.readFull(int(h.Length), 1<<20)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return f, fmt.Errorf("%w: %v payload %d of %d bytes", errMidFrame, h.Type, len(f.Payload), h.Length)
		}
		return f, err
	}
	if h.Type == wire.TypeBatch {
		n := int(h.NFds)
		if len(p.queue) < n {
			p.violate("SND-2", "BATCH at offset %d declares %d descriptors, %d arrived with it or before", f.Offset, n, len(p.queue))
			return f, fmt.Errorf("missing descriptors")
		}
		f.Fds, p.queue = p.queue[:n:n], p.queue[n:]
		for _, a := range f.Fds {
			if a.at > f.Offset {
				p.violate("TRN-3", "a descriptor of the BATCH at offset %d came with byte %d, after the frame's first byte", f.Offset, a.at)
			}
		}
	}
	if len(p.queue) > 0 && (h.Type == wire.TypeEnd || h.Type == wire.TypeError) {
		p.violate("SND-2", "%d descriptors arrived that no BATCH frame takes (after %v at offset %d)", len(p.queue), h.Type, f.Offset)
	}
	return f, nil
}

// expectEOF reads until end of stream and reports what came instead.
func (p *wirePeer) expectEOF() error {
	b, err := p.read(4096)
	if len(b) > 0 {
		return fmt.Errorf("%d more bytes: % x", len(b), b[:min(len(b), 32)])
	}
	if closedByPeer(err) {
		return nil
	}
	return err
}

// listenUnix creates the suite's listening socket at path.
func listenUnix(path string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// acceptWithin accepts one connection, or fails after wait.
func acceptWithin(ln *net.UnixListener, wait time.Duration) (*net.UnixConn, error) {
	ln.SetDeadline(time.Now().Add(wait))
	return ln.AcceptUnix()
}

// dialUnix connects to the implementation's socket at path.
func dialUnix(path string) (*net.UnixConn, error) {
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
}

// tempDir makes a short directory for sockets (paths are limited to 107
// bytes).
func tempDir() (string, error) { return os.MkdirTemp("", "gf") }
