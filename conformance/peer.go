package conformance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
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
	// rightsRefused: the implementation refused descriptors the suite
	// pushed at it (SO_PASSRIGHTS off).
	rightsRefused bool
	// unread is a frame read ahead, which readFrame returns next.
	unread *inFrame
	// until, when set (unix nanoseconds), bounds every read from then on:
	// the suite knows that nothing more is due (the adapter answered, an
	// ERROR came) and only waits for the end of the stream a little.
	until atomic.Int64
}

// settle is how long the suite waits for an end of stream that is due at
// once: the implementation closed before its adapter answered, or closes
// right after its ERROR. Only a connection left open ever waits it out.
const settle = time.Second

// cut makes every read, the one under way included, end within settle.
func (p *wirePeer) cut() {
	t := time.Now().Add(settle)
	p.until.Store(t.UnixNano())
	p.c.SetReadDeadline(t)
}

// readDeadline is the deadline of the next read.
func (p *wirePeer) readDeadline() time.Time {
	d := time.Now().Add(p.wait)
	if u := p.until.Load(); u != 0 && time.Unix(0, u).Before(d) {
		return time.Unix(0, u)
	}
	return d
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
// kernel took only part, with plain writes). A peer that refuses
// descriptors outright (SO_PASSRIGHTS off: EPERM) gets the bytes alone.
func (p *wirePeer) send(data []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	err := p.sendOOB(data, oob)
	if errors.Is(err, unix.EPERM) && oob != nil {
		p.rightsRefused = true
		return p.sendOOB(data, nil)
	}
	return err
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

// drained waits until the implementation has read everything the suite
// wrote (SIOCOUTQ: the bytes still queued for it), within the wait.
func (p *wirePeer) drained() error {
	raw, err := p.c.SyscallConn()
	if err != nil {
		return err
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	deadline := time.After(p.wait)
	for {
		var n int
		var ierr error
		raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if ierr != nil || n == 0 {
			return ierr
		}
		select {
		case <-t.C:
		case <-deadline:
			return fmt.Errorf("the implementation did not read %d bytes within %v", n, p.wait)
		}
	}
}

// closeWrite ends the suite's side of the stream.
func (p *wirePeer) closeWrite() error { return p.c.CloseWrite() }

// read reads up to n bytes (at least 1) with one recvmsg and queues the
// descriptors that came with them.
func (p *wirePeer) read(n int) ([]byte, error) {
	buf := make([]byte, n)
	p.c.SetReadDeadline(p.readDeadline())
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
	if f := p.unread; f != nil {
		p.unread = nil
		return *f, nil
	}
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

// seq is n integers from first up.
func seq(first, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = first + i
	}
	return out
}

// errNotRoot marks a scenario that needs root (it plays another user).
var errNotRoot = errorString("needs root, to play a peer of another user")

// abstractName is a fresh Linux abstract address, "@" and a random name.
func abstractName() string { return "@gf-conformance-" + string(nonce()) }

// asUID runs f on a locked OS thread whose effective uid is uid for the
// duration (a raw setresuid: Go's own changes every thread). The kernel
// records the caller's credentials on a socket at connect(2) and listen(2)
// (SO_PEERCRED), so the peer sees uid. If the thread cannot change back it
// stays locked and dies with its goroutine.
func asUID(uid int, f func() error) error {
	errs := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		keep := ^uintptr(0)
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
			runtime.UnlockOSThread()
			errs <- os.NewSyscallError("setresuid", e)
			return
		}
		err := f()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, 0, keep); e == 0 {
			runtime.UnlockOSThread()
		}
		errs <- err
	}()
	return <-errs
}

// listenUnixAs creates the suite's listening socket at path (a file path
// or "@name"), owned for the kernel by uid when uid is not 0 (it needs
// root), with a backlog of 0 when tight (the second connection waits).
func listenUnixAs(path string, uid int, tight bool) (*net.UnixListener, error) {
	if uid == 0 && !tight {
		return listenUnix(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	backlog := 16
	if tight {
		backlog = 0
	}
	listen := func() error { return os.NewSyscallError("listen", unix.Listen(fd, backlog)) }
	if uid != 0 {
		err = asUID(uid, listen)
	} else {
		err = listen()
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	return ln.(*net.UnixListener), nil
}

// fillBacklog connects to the listener at path until its backlog is full,
// so that the next connect(2) waits, and returns the connections.
func fillBacklog(path string) ([]*net.UnixConn, error) {
	var conns []*net.UnixConn
	for len(conns) < 64 {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return conns, os.NewSyscallError("socket", err)
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if errors.Is(err, unix.EAGAIN) {
			unix.Close(fd)
			return conns, nil
		}
		if err != nil {
			unix.Close(fd)
			return conns, os.NewSyscallError("connect", err)
		}
		f := os.NewFile(uintptr(fd), "blocker")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return conns, err
		}
		conns = append(conns, c.(*net.UnixConn))
	}
	return conns, errors.New("the listener's backlog never filled")
}

// readSlowly reads chunk bytes every interval (descriptors closed as they
// come) until the implementation closes or want bytes came, and returns
// how many came; it gives up after bound.
func (p *wirePeer) readSlowly(chunk int, interval, bound time.Duration, want int) (int, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	stop := time.After(bound)
	total := 0
	for total < want {
		b, err := p.read(min(chunk, want-total))
		total += len(b)
		for _, fd := range p.received {
			unix.Close(fd)
		}
		p.received, p.queue = nil, nil
		if err != nil {
			if closedByPeer(err) {
				return total, nil
			}
			return total, err
		}
		select {
		case <-t.C:
		case <-stop:
			return total, fmt.Errorf("still writing after %v (%d bytes read)", bound, total)
		}
	}
	return total, nil
}

// unprivileged is the environment variable that makes the suite behave as
// if it did not run as root (for its own tests of how it reports the
// checks it then skips).
const unprivileged = "GRACEFUL_CONFORMANCE_UNPRIVILEGED"

// isRoot reports whether the suite can play peers of other users.
func isRoot() bool { return os.Geteuid() == 0 && os.Getenv(unprivileged) == "" }
