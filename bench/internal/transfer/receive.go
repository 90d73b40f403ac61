package transfer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	fdpeer "github.com/ftrvxmtrx/fd"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/bench/internal/blocking"
	"github.com/gracefulfd/graceful/bench/internal/harness"
	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/internal/floor"
)

// Implementations the benchmarks compare.
const (
	Floor       = "floor"        // golang.org/x/sys/unix on blocking sockets
	Net         = "net"          // the floor's messages through package net
	FtrvxmtrxFd = "ftrvxmtrx-fd" // github.com/ftrvxmtrx/fd Put and Get
	Graceful    = "graceful"     // this project's library
	// BlockingBoth is a prototype of the same protocol with blocking
	// system calls on both sides and one connection served at a time
	// (internal/blocking): the protocol's own cost, without package net
	// or a goroutine per connection on either side.
	BlockingBoth = "protocol-blocking-both"
)

// Modes of a transfer.
const (
	// Conn: every request on one open connection.
	Conn = "conn"
	// Dial: a new connection for every request, the way a restarting
	// process asks for its predecessor's descriptors.
	Dial = "dial"
)

// Receiver asks a sender in another process for its n descriptors and
// closes them.
type Receiver interface {
	Receive(n int) error
}

// Implementations lists what each mode can measure.
var Implementations = map[string][]string{
	Conn: {Floor, Net, FtrvxmtrxFd, Graceful},
	Dial: {Floor, Graceful, BlockingBoth},
}

// Start starts the sending process for impl in mode, serving n
// descriptors per request, and returns the receiving end. Both are closed
// when tb ends.
func Start(tb testing.TB, mode, impl string, n int) Receiver {
	tb.Helper()
	env := []string{CountEnv + "=" + strconv.Itoa(n)}
	switch mode {
	case Conn:
		mine, theirs, err := harness.Socketpair()
		if err != nil {
			tb.Fatal(err)
		}
		role := map[string]string{Floor: RoleFloorConn, Net: RoleNetConn, FtrvxmtrxFd: RoleFdConn, Graceful: RoleGracefulConn}[impl]
		// Close our end before the child is stopped, so that it sees EOF.
		harness.Start(tb, role, env, theirs)
		if impl == Floor {
			tb.Cleanup(func() { mine.Close() })
			return &floorConnReceiver{r: floor.NewReceiver(int(mine.Fd()), false)}
		}
		c, err := net.FileConn(mine)
		mine.Close()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		uc := c.(*net.UnixConn)
		switch impl {
		case Net:
			return &netReceiver{conn: uc, oob: make([]byte, unix.CmsgSpace((floor.BatchSize+1)*4))}
		case FtrvxmtrxFd:
			return &fdReceiver{conn: uc}
		case Graceful:
			return &gracefulConnReceiver{conn: uc}
		}
	case Dial:
		dir, err := os.MkdirTemp("", "gf")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		path := filepath.Join(dir, "s")
		ln, err := floor.ListenUnix(path)
		if err != nil {
			tb.Fatal(err)
		}
		switch impl {
		case Floor:
			harness.Start(tb, RoleFloorDial, env, ln)
			return &floorDialReceiver{path: path}
		case Graceful:
			harness.Start(tb, RoleGracefulDial, env, ln)
			r := &gracefulDialReceiver{path: path}
			r.client.Logger = graceful.NewSlogLogger(&r.busy)
			return r
		case BlockingBoth:
			harness.Start(tb, RoleBlockingDial, env, ln)
			return &blockingReceiver{path: path, r: blocking.Receiver{Timeout: 10 * time.Second}}
		}
	}
	tb.Fatalf("no %s transfer for %s", mode, impl)
	return nil
}

func checkCount(got, want int) error {
	if got != want {
		return fmt.Errorf("%w: %d of %d", harness.ErrShort, got, want)
	}
	return nil
}

type floorConnReceiver struct{ r *floor.Receiver }

func (f *floorConnReceiver) Receive(n int) error {
	fds, err := f.r.Request(n)
	if err != nil {
		return err
	}
	floor.CloseAll(fds)
	return checkCount(len(fds), n)
}

type floorDialReceiver struct {
	path string
	addr unix.SockaddrUnix
	conn floorConnReceiver
}

func (f *floorDialReceiver) Receive(n int) error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(sock)
	f.addr.Name = f.path
	if err := unix.Connect(sock, &f.addr); err != nil {
		return os.NewSyscallError("connect", err)
	}
	if f.conn.r == nil {
		f.conn.r = floor.NewReceiver(sock, false)
	}
	f.conn.r.Reset(sock)
	return f.conn.Receive(n)
}

type netReceiver struct {
	conn *net.UnixConn
	req  [1]byte
	buf  [64]byte
	oob  []byte
	fds  []int
}

func (r *netReceiver) Receive(n int) error {
	if _, err := r.conn.Write(r.req[:]); err != nil {
		return err
	}
	r.fds = r.fds[:0]
	for len(r.fds) < n {
		_, oobn, flags, _, err := r.conn.ReadMsgUnix(r.buf[:], r.oob)
		r.fds = floor.AppendRights(r.fds, r.oob[:oobn])
		if err == nil && flags&unix.MSG_CTRUNC != 0 {
			err = floor.ErrTruncated
		}
		if err != nil {
			floor.CloseAll(r.fds)
			return err
		}
	}
	floor.CloseAll(r.fds)
	return checkCount(len(r.fds), n)
}

// fdReceiver uses the peer library as documented: Get returns *os.File
// values, which the caller must close one by one (each has a finalizer,
// so a bulk close_range behind their backs would be unsafe).
type fdReceiver struct {
	conn *net.UnixConn
	req  [1]byte
}

func (r *fdReceiver) Receive(n int) error {
	if _, err := r.conn.Write(r.req[:]); err != nil {
		return err
	}
	got := 0
	for got < n {
		files, err := fdpeer.Get(r.conn, min(n-got, floor.BatchSize), nil)
		got += len(files)
		for _, f := range files {
			f.Close()
		}
		if err != nil {
			return err
		}
		if len(files) == 0 {
			return fmt.Errorf("%w: an empty message after %d", harness.ErrShort, got)
		}
	}
	return checkCount(got, n)
}

type gracefulConnReceiver struct {
	conn *net.UnixConn
	fds  []int
}

func (r *gracefulConnReceiver) Receive(n int) error {
	r.fds = r.fds[:0]
	err := graceful.ReceiveFrom(r.conn, r.collect)
	floor.CloseAll(r.fds)
	if err != nil {
		return err
	}
	return checkCount(len(r.fds), n)
}

func (r *gracefulConnReceiver) collect(fd int, _ io.Reader) error {
	r.fds = append(r.fds, fd)
	return nil
}

type gracefulDialReceiver struct {
	path   string
	client graceful.Client
	fds    []int
	busy   busyCounter
}

// Receive is graceful.Receive: a Client asks a BUSY server again by itself
// (after a pause), and tells its Logger, which counts it (BusyRetries).
func (r *gracefulDialReceiver) Receive(n int) error {
	r.fds = r.fds[:0]
	err := r.client.Receive(r.path, r.collect)
	floor.CloseAll(r.fds)
	if err != nil {
		return err
	}
	return checkCount(len(r.fds), n)
}

// busyCounter is a Client's Logger (through graceful.NewSlogLogger) that
// counts the sessions the server refused as BUSY: the Client logs each one
// it asks again after at debug level.
type busyCounter int

func (b *busyCounter) Debugf(_ string, args ...any) {
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, graceful.ErrBusy) {
			*b++
		}
	}
}

// maxBusyRetries bounds the retries of one benchmark.
const maxBusyRetries = 1 << 20

// BusyRetries reports how many times a receiver was told BUSY and tried
// again, for receivers that can be.
func BusyRetries(r Receiver) (int, bool) {
	switch g := r.(type) {
	case *gracefulDialReceiver:
		return int(g.busy), true
	case *blockingReceiver:
		return g.busy, true
	}
	return 0, false
}

type blockingReceiver struct {
	path string
	r    blocking.Receiver
	fds  []int
	busy int
}

// Receive retries BUSY at once (the prototype's sender serves one
// connection at a time, so it never answers BUSY; this is a safeguard).
func (b *blockingReceiver) Receive(n int) error {
	for {
		var err error
		b.fds, err = b.r.Receive(b.path, b.fds[:0])
		floor.CloseAll(b.fds)
		if errors.Is(err, blocking.ErrBusy) && b.busy < maxBusyRetries {
			b.busy++
			continue
		}
		if err != nil {
			return err
		}
		return checkCount(len(b.fds), n)
	}
}

func (r *gracefulDialReceiver) collect(fd int, _ io.Reader) error {
	r.fds = append(r.fds, fd)
	return nil
}

// StartFloorReceiver starts a floor sender of n descriptors in a child
// process and returns the receiver, for benchmarks that need received
// descriptors to work on. Both are closed when tb ends.
func StartFloorReceiver(tb testing.TB, n int) *floor.Receiver {
	tb.Helper()
	mine, theirs, err := harness.Socketpair()
	if err != nil {
		tb.Fatal(err)
	}
	harness.Start(tb, RoleFloorConn, []string{CountEnv + "=" + strconv.Itoa(n)}, theirs)
	tb.Cleanup(func() { mine.Close() })
	return floor.NewReceiver(int(mine.Fd()), false)
}
