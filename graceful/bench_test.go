//go:build linux

package graceful_test

// The library's own benchmarks, beside two hand-written golang.org/x/sys/unix
// references (internal/floor): blocking sockets, one sendmsg per 252
// descriptors, no framing, no allocation per operation; impl=floor without
// an acknowledgement, impl=floor-ack with the protocol's message pattern
// (request, set, a one-byte acknowledgement the sender waits for); and
// impl=net-ack, floor-ack's messages through package net (Go's poller, and
// by dialling a net.UnixListener with a goroutine per connection, as a
// graceful.Server accepts), which a library that takes a net.Conn cannot
// go below. All run in the same process, in the same run, so that the
// ratios graceful/floor, graceful/floor-ack and graceful/net-ack can be
// quoted:
//
//	go test -run '^$' -bench . -count 6 ./graceful/ > new.txt
//	cd bench && go tool benchstat -col /impl ../new.txt
//
// (bench/ pins benchstat; its cmd/benchtable runs these beside the rest
// in interleaved rounds and writes bench/RESULTS.md.)
//
// Every operation asks for the sender's whole set and ends once every
// descriptor is in the receiver's hands and closed again (with one
// close_range per run of consecutive numbers, the same for both).
//
//   - mode=conn: one request after another on one open connection:
//     graceful.ReceiveFrom against Server.ServeConn (ReadyTimeout < 0, so a
//     session is HELLO, the set, ACK: no READY, as SendTo), and the floor's
//     request, recvmsg against read, sendmsg.
//   - mode=dial: a new connection per request, the way a new process asks
//     its predecessor: graceful.Receive against a graceful.Server (Receive
//     asks a BUSY server again after a pause by itself; busy-retries/op
//     counts how often), and the floor's connect, request, recvmsg, close
//     against accept4, read, sendmsg, close (floor-ack and net-ack: the
//     receiver writes its acknowledgement before it closes, and the sender
//     reads it; net-ack's receiver is floor-ack's, on a socket of its own,
//     as Receive's is).
//   - proc=1: the sender is a goroutine of this process (a socketpair for
//     mode=conn); proc=2: the sender is this test binary re-executed (see
//     TestMain), so every wake-up crosses processes as in a real hand-off.
//
// bench/ (a module of its own) compares the same with other libraries, and
// whole hand-offs to new processes.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/internal/floor"
)

// benchPeerEnv names the sender role this binary plays when a benchmark
// re-executes it; benchCountEnv the size of its set.
const (
	benchPeerEnv  = "GRACEFUL_BENCH_PEER"
	benchCountEnv = "GRACEFUL_BENCH_FDS"
)

// TestMain only turns this binary into a benchmark's peer process, or a
// spec's helper process (helper_test.go), when asked to by the
// environment; otherwise it runs the tests as usual.
func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(helperMain(name))
	}
	if role := os.Getenv(benchPeerEnv); role != "" {
		if err := benchPeerMain(role); err != nil {
			fmt.Fprintf(os.Stderr, "bench peer %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	benchFloor    = "floor"
	benchFloorAck = "floor-ack"
	benchNetAck   = "net-ack"
	benchGraceful = "graceful"
	benchConn     = "conn"
	benchDial     = "dial"
)

func BenchmarkTransfer(b *testing.B) {
	cases := []struct {
		mode string
		fds  []int
	}{
		{benchConn, []int{1, 253, 1000}},
		{benchDial, []int{1, 253, 1000}},
	}
	for _, procs := range []int{1, 2} {
		for _, c := range cases {
			for _, n := range c.fds {
				for _, impl := range []string{benchFloor, benchFloorAck, benchNetAck, benchGraceful} {
					name := fmt.Sprintf("proc=%d/mode=%s/fds=%d/impl=%s", procs, c.mode, n, impl)
					b.Run(name, func(b *testing.B) { benchTransfer(b, procs, c.mode, impl, n) })
				}
			}
		}
	}
}

func benchTransfer(b *testing.B, procs int, mode, impl string, n int) {
	before := benchOpenFds(b)
	b.Cleanup(func() { // registered first, so it runs after every other cleanup
		if after := benchOpenFds(b); after > before {
			b.Errorf("%d descriptors open after the benchmark, %d before", after, before)
		}
	})
	var busy benchBusy
	receive := benchStartSender(b, procs, mode, impl, n, &busy)
	var fds []int
	op := func() {
		fds = fds[:0]
		var err error
		if fds, err = receive(fds); err != nil {
			b.Fatal(err)
		}
		floor.CloseAll(fds)
		if len(fds) != n {
			b.Fatalf("received %d descriptors, want %d", len(fds), n)
		}
	}
	op() // warm up, and prove it works
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		op()
	}
	b.StopTimer()
	if mode == benchDial && impl == benchGraceful {
		b.ReportMetric(float64(busy.n.Load())/float64(b.N), "busy-retries/op")
	}
}

// benchBusy counts the sessions a Client was refused as BUSY (and retried
// after a pause): through NewSlogLogger, it is the Client's Logger, which
// hears of every BUSY answer it asks again after, at debug level.
type benchBusy struct{ n atomic.Int64 }

func (b *benchBusy) Debugf(_ string, args ...any) {
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, graceful.ErrBusy) {
			b.n.Add(1)
		}
	}
}

// receiveFunc asks for the set once and appends what arrived to fds.
type receiveFunc func(fds []int) ([]int, error)

// benchStartSender starts the sender, in this process or in a child, and
// returns the receiving side. Everything is stopped when b ends.
func benchStartSender(b *testing.B, procs int, mode, impl string, n int, busy *benchBusy) receiveFunc {
	b.Helper()
	var mine, theirs *os.File // the receiver's socket, and what the sender serves on
	path := ""
	switch mode {
	case benchConn:
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		mine, theirs = os.NewFile(uintptr(fds[0]), "receiver"), os.NewFile(uintptr(fds[1]), "sender")
	case benchDial:
		dir, err := os.MkdirTemp("", "gf")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		path = filepath.Join(dir, "s")
		if theirs, err = floor.ListenUnix(path); err != nil {
			b.Fatal(err)
		}
	}

	if procs == 1 {
		stop, err := benchServe(mode, impl, n, theirs)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if mine != nil {
				mine.Close() // the sender sees EOF first
			}
			if err := stop(); err != nil {
				b.Error(err)
			}
		})
	} else {
		benchStartChild(b, mode+"-"+impl, n, theirs)
		if mine != nil {
			b.Cleanup(func() { mine.Close() }) // runs before the child is stopped
		}
	}

	switch {
	case mode == benchConn && impl == benchNetAck:
		c, err := net.FileConn(mine)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		r := floor.NewNetReceiver(c.(*net.UnixConn))
		return func(fds []int) ([]int, error) {
			got, err := r.Request(n)
			return append(fds, got...), err
		}
	case mode == benchConn && impl != benchGraceful:
		r := floor.NewReceiver(int(mine.Fd()), impl == benchFloorAck)
		return func(fds []int) ([]int, error) {
			got, err := r.Request(n)
			return append(fds, got...), err
		}
	case mode == benchConn && impl == benchGraceful:
		c, err := net.FileConn(mine)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return func(fds []int) ([]int, error) {
			err := graceful.ReceiveFrom(c, func(fd int, _ io.Reader) error { fds = append(fds, fd); return nil })
			return fds, err
		}
	case mode == benchDial && impl != benchGraceful:
		r := floor.NewReceiver(-1, impl != benchFloor)
		addr := &unix.SockaddrUnix{Name: path}
		return func(fds []int) ([]int, error) {
			sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fds, os.NewSyscallError("socket", err)
			}
			defer unix.Close(sock)
			if err := unix.Connect(sock, addr); err != nil {
				return fds, os.NewSyscallError("connect", err)
			}
			r.Reset(sock)
			got, err := r.Request(n)
			return append(fds, got...), err
		}
	default: // dial, graceful: Receive retries a BUSY server itself
		c := &graceful.Client{Logger: graceful.NewSlogLogger(busy)}
		return func(fds []int) ([]int, error) {
			err := c.Receive(path, func(fd int, _ io.Reader) error { fds = append(fds, fd); return nil })
			return fds, err
		}
	}
}

// benchServe runs the sender of impl in mode on sock in this process and
// returns how to stop it and learn how it ended.
func benchServe(mode, impl string, n int, sock *os.File) (stop func() error, err error) {
	tcp, fds, err := floor.ListenerDups(n)
	if err != nil {
		sock.Close()
		return nil, err
	}
	closeFds := func() { floor.CloseAll(fds); tcp.Close() }
	served := make(chan error, 1)
	finish := func() error {
		select {
		case err := <-served:
			closeFds()
			return err
		case <-time.After(10 * time.Second):
			return errors.New("the sender did not stop within 10s")
		}
	}
	switch {
	case mode == benchConn && impl == benchNetAck:
		c, err := net.FileConn(sock)
		sock.Close()
		if err != nil {
			closeFds()
			return nil, err
		}
		go func() {
			err := floor.NewNetSender(c.(*net.UnixConn), fds).Serve()
			c.Close()
			served <- err
		}()
		return finish, nil
	case mode == benchDial && impl == benchNetAck:
		l, err := net.FileListener(sock)
		sock.Close()
		if err != nil {
			closeFds()
			return nil, err
		}
		go func() { served <- floor.ServeNetListener(l.(*net.UnixListener), fds) }()
		return func() error {
			l.Close()
			return finish()
		}, nil
	case mode == benchConn && impl != benchGraceful:
		go func() {
			err := floor.NewSender(int(sock.Fd()), fds, impl == benchFloorAck).Serve()
			sock.Close()
			served <- err
		}()
		return finish, nil
	case mode == benchDial && impl != benchGraceful:
		ln := int(sock.Fd())
		go func() { served <- floor.ServeAccepted(ln, fds, impl == benchFloorAck) }()
		return func() error {
			unix.Shutdown(ln, unix.SHUT_RDWR) // wakes the blocked accept4
			err := finish()
			sock.Close()
			return err
		}, nil
	case mode == benchConn && impl == benchGraceful:
		c, err := net.FileConn(sock)
		sock.Close()
		if err != nil {
			return nil, err
		}
		srv := benchGracefulServer(fds)
		srv.ReadyTimeout = -1
		go func() {
			// ServeConn returns nil once the receiver closes between sessions.
			err := srv.ServeConn(c)
			c.Close()
			served <- err
		}()
		return finish, nil
	default: // dial, graceful
		l, err := net.FileListener(sock)
		sock.Close()
		if err != nil {
			return nil, err
		}
		srv := benchGracefulServer(fds)
		go func() { served <- srv.Serve(l) }()
		return func() error {
			srv.Close()
			if err := finish(); !errors.Is(err, graceful.ErrServerClosed) {
				return err
			}
			return nil
		}, nil
	}
}

// benchStartChild runs this binary as the sender, with sock as its
// descriptor 3. The child lives until its stdin closes (or, in mode conn,
// its socket).
func benchStartChild(b *testing.B, role string, n int, sock *os.File) {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{benchPeerEnv + "=" + role, benchCountEnv + "=" + strconv.Itoa(n)}
	cmd.ExtraFiles = []*os.File{sock}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	err = cmd.Start()
	sock.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("sender process: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			b.Error("sender process did not exit within 10s")
		}
	})
}

// benchPeerMain is the child's side of benchStartChild.
func benchPeerMain(role string) error {
	n, err := strconv.Atoi(os.Getenv(benchCountEnv))
	if err != nil {
		return err
	}
	var mode, impl string
	if _, err := fmt.Sscanf(role, "%4s-%s", &mode, &impl); err != nil {
		return fmt.Errorf("role %q: %w", role, err)
	}
	stop, err := benchServe(mode, impl, n, os.NewFile(3, "sock"))
	if err != nil {
		return err
	}
	if mode == benchDial {
		io.Copy(io.Discard, os.Stdin) // serve until the parent says stop
	}
	return stop()
}

func benchGracefulServer(fds []int) *graceful.Server {
	return &graceful.Server{Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
		for _, fd := range fds {
			if w.Write(fd, nil) != nil {
				return
			}
		}
	})}
}

var benchStartPoller sync.Once

// benchOpenFds counts this process's open descriptors.
func benchOpenFds(b *testing.B) int {
	b.Helper()
	benchStartPoller.Do(func() {
		// The runtime's poller opens its own descriptors on first use:
		// open them before the first count.
		if r, w, err := os.Pipe(); err == nil {
			r.Close()
			w.Close()
		}
	})
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Fatal(err)
	}
	return len(entries)
}
