//go:build linux

package graceful_test

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// The session fuzz targets drive a whole session of the library, over a
// socket pair, against a peer that plays bytes and descriptors from the
// fuzz input: stream is what the peer writes, plan how: each plan byte is
// one write of (b>>3)+1 bytes carrying b&7 descriptors (6 means 252, 7
// means 253), repeated until the stream is used up; an empty plan is one
// write of everything. The peer then closes its writing side, and reads
// and closes whatever the library sends it.
//
// Each run must end well within a second (the sessions' deadlines are
// short), must not panic, and must leave this process's descriptor table
// as it found it: every descriptor received was handed over or closed.

// fuzzTimeout is each step's deadline in the fuzzed sessions.
const fuzzTimeout = 50 * time.Millisecond

// FuzzServeConn fuzzes a sender: Server.ServeConn, whose Handler sends two
// descriptors, facing the scripted receiver.
func FuzzServeConn(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream, plan []byte) {
		set := fuzzPipe(t)
		srv := &graceful.Server{
			Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
				w.Write(set[0], nil)
				w.WriteKind(set[1], graceful.KindFile, graceful.Meta{"k": "v"})
			}),
			Timeout:        fuzzTimeout,
			ReadyTimeout:   fuzzTimeout,
			SessionTimeout: 4 * fuzzTimeout,
		}
		fuzzSession(t, stream, plan, func(c *net.UnixConn) error { return srv.ServeConn(c) })
	})
}

// FuzzReceiveFrom fuzzes a receiver: Client.ReceiveFrom facing the
// scripted sender. Once a descriptor reached the callback (which takes
// every one), the result must say the set is the caller's: nil or
// ErrUnconfirmed.
func FuzzReceiveFrom(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream, plan []byte) {
		client := &graceful.Client{Timeout: fuzzTimeout, SessionTimeout: 4 * fuzzTimeout, MaxFds: 600, MaxMetaBytes: 1 << 16}
		handed := 0
		var err error
		fuzzSession(t, stream, plan, func(c *net.UnixConn) error {
			err = client.ReceiveFrom(c, func(fd int, meta io.Reader) error {
				handed++
				if meta != nil {
					io.Copy(io.Discard, meta)
				}
				return unix.Close(fd)
			})
			return err
		})
		if handed > 0 && err != nil && !errors.Is(err, graceful.ErrUnconfirmed) {
			t.Fatalf("%d descriptors reached the callback, yet the error is %v", handed, err)
		}
		if errors.Is(err, graceful.ErrUnconfirmed) && errors.Is(err, graceful.ErrPeerClosed) {
			t.Fatalf("ErrUnconfirmed that also matches ErrPeerClosed: %v", err)
		}
	})
}

var fuzzWarm sync.Once

// fuzzSession runs session on one end of a socket pair while the peer
// plays stream and plan on the other, and checks the run's bounds.
func fuzzSession(t *testing.T, stream, plan []byte, session func(*net.UnixConn) error) {
	t.Helper()
	fuzzWarm.Do(func() { // the runtime's poller opens its descriptors once
		a, b := fuzzPair(t)
		a.Close()
		b.Close()
	})
	watchdog := time.AfterFunc(8*time.Second, func() {
		buf := make([]byte, 1<<20)
		os.Stderr.Write(buf[:runtime.Stack(buf, true)])
		panic("fuzz session hung")
	})
	defer watchdog.Stop()
	attach := fuzzPipe(t)
	before := fuzzFds(t)
	lib, peer := fuzzPair(t)

	drained := make(chan struct{})
	go func() { // read and close whatever the library sends
		defer close(drained)
		oob := make([]byte, fdpass.OOBSize)
		buf := make([]byte, 4096)
		for {
			peer.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, fds, err := fdpass.Read(peer, buf, oob, nil)
			fdpass.CloseAll(fds)
			if err != nil {
				return
			}
		}
	}()
	written := make(chan struct{})
	go func() {
		defer close(written)
		defer peer.CloseWrite()
		for step := 0; len(stream) > 0; step++ {
			size, nfds := len(stream), 0
			if len(plan) > 0 {
				p := plan[step%len(plan)]
				size, nfds = int(p>>3)+1, int(p&7)
				switch nfds {
				case 6:
					nfds = wire.MaxFdsPerBatch
				case 7:
					nfds = wire.MaxFdsPerBatch + 1
				}
			}
			chunk := stream[:min(size, len(stream))]
			stream = stream[len(chunk):]
			fds := make([]int, nfds)
			for i := range fds {
				fds[i] = attach[0]
			}
			peer.SetWriteDeadline(time.Now().Add(time.Second))
			err := fdpass.Write(peer, chunk, fdpass.AppendRights(nil, fds))
			if errors.Is(err, unix.EPERM) { // the library's socket refuses descriptors
				err = fdpass.Write(peer, chunk, nil)
			}
			if err != nil {
				return
			}
		}
	}()

	result := make(chan error, 1)
	go func() { result <- session(lib) }()
	select {
	case <-result:
	case <-time.After(5 * time.Second):
		t.Fatalf("the session did not end")
	}
	lib.Close()
	<-written
	<-drained
	peer.Close()
	if after := fuzzFds(t); after != before {
		t.Fatalf("%d descriptors open after the session, %d before", after, before)
	}
}

func fuzzPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// fuzzPipe is a pipe's two ends, closed by the caller.
func fuzzPipe(t *testing.T) []int {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[:]
}

func fuzzFds(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
