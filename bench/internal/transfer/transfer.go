// Package transfer holds both ends of every descriptor transfer the
// benchmarks measure: the sender roles, which run in a child process, and
// the receivers, which run in the benchmark. Each receiver asks for the
// sender's whole set, takes every descriptor into its hands and closes
// them all before returning, so that every operation costs the same work
// at the receiving end apart from the mechanism under test.
package transfer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	fdpeer "github.com/ftrvxmtrx/fd"

	"github.com/gracefulfd/graceful/bench/internal/blocking"
	"github.com/gracefulfd/graceful/bench/internal/harness"
	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/internal/floor"
)

// Environment of the sender roles.
const (
	// CountEnv is the number of descriptors a sender hands out.
	CountEnv = "GF_BENCH_FDS"
)

// Sender roles. Each finds its socket at descriptor 3: a connected socket
// for the "-conn" roles, a listening one for the "-dial" roles.
const (
	RoleFloorConn    = "floor-conn"
	RoleFloorDial    = "floor-dial"
	RoleNetConn      = "net-conn"
	RoleFdConn       = "ftrvxmtrx-fd-conn"
	RoleGracefulConn = "graceful-conn"
	RoleGracefulDial = "graceful-dial"
	RoleBlockingDial = "blocking-dial"
)

// Roles maps each sender role to its body, for harness.Main.
var Roles = map[string]func() error{
	RoleFloorConn:    floorConn,
	RoleFloorDial:    floorDial,
	RoleNetConn:      netConn,
	RoleFdConn:       fdConn,
	RoleGracefulConn: gracefulConn,
	RoleGracefulDial: gracefulDial,
	RoleBlockingDial: blockingDial,
}

// senderFds opens the descriptors a sender hands out: duplicates of one
// TCP listener, as a restarting server would hand out its listeners.
func senderFds() (*os.File, []int, error) {
	n, err := harness.EnvInt(CountEnv)
	if err != nil {
		return nil, nil, err
	}
	return floor.ListenerDups(n)
}

func floorConn() error {
	ln, fds, err := senderFds()
	if err != nil {
		return err
	}
	defer ln.Close()
	return floor.NewSender(3, fds, false).Serve()
}

// floorDial accepts one connection per request: accept4, read the
// request, sendmsg, close.
func floorDial() error {
	harness.ExitWhenStdinCloses()
	ln, fds, err := senderFds()
	if err != nil {
		return err
	}
	defer ln.Close()
	return floor.ServeAccepted(3, fds, false)
}

// inheritedConn turns descriptor 3 into a *net.UnixConn.
func inheritedConn() (*net.UnixConn, error) {
	f := os.NewFile(3, "conn")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("descriptor 3 is a %T", c)
	}
	return uc, nil
}

// netConn is the floor written with package net instead of raw system
// calls: the same messages, through Go's poller.
func netConn() error {
	ln, fds, err := senderFds()
	if err != nil {
		return err
	}
	defer ln.Close()
	conn, err := inheritedConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	batches := floor.RightsBatches(fds)
	return answerEach(conn, func(req []byte) error {
		for _, oob := range batches {
			if _, _, err := conn.WriteMsgUnix(req, oob, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// answerEach reads one-byte requests on conn and answers each, until the
// receiver closes conn.
func answerEach(conn *net.UnixConn, answer func(req []byte) error) error {
	req := make([]byte, 1)
	for {
		if _, err := conn.Read(req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := answer(req); err != nil {
			return err
		}
	}
}

// fdConn answers each request with the peer library's Put, in batches it
// can carry.
func fdConn() error {
	ln, fds, err := senderFds()
	if err != nil {
		return err
	}
	defer ln.Close()
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), "dup")
	}
	conn, err := inheritedConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	return answerEach(conn, func([]byte) error {
		for i := 0; i < len(files); i += floor.BatchSize {
			if err := fdpeer.Put(conn, files[i:min(i+floor.BatchSize, len(files))]...); err != nil {
				return err
			}
		}
		return nil
	})
}

// gracefulConn runs whole sessions on the open connection, one after
// another, with Server.ServeConn until the receiver closes it. ReadyTimeout
// < 0: the receiver (ReceiveFrom) acknowledges each set and says no READY,
// so a request is HELLO, the set, ACK.
func gracefulConn() error {
	ln, fds, err := senderFds()
	if err != nil {
		return err
	}
	defer ln.Close()
	conn, err := inheritedConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	srv := gracefulServer(fds)
	srv.ReadyTimeout = -1
	return srv.ServeConn(conn)
}

// gracefulServer hands out fds to every receiver.
func gracefulServer(fds []int) *graceful.Server {
	return &graceful.Server{Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
		for _, fd := range fds {
			if w.Write(fd, nil) != nil {
				return
			}
		}
	})}
}

// gracefulDial serves every set with a graceful.Server on the inherited
// listener: the way a restarting process offers its descriptors.
func gracefulDial() error {
	harness.ExitWhenStdinCloses()
	ln, fds, err := senderFds()
	if err != nil {
		return err
	}
	defer ln.Close()
	f := os.NewFile(3, "listener")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return err
	}
	return gracefulServer(fds).Serve(l)
}

// blockingDial serves sets with the prototype blocking sender
// (internal/blocking) on the inherited blocking listener.
func blockingDial() error {
	harness.ExitWhenStdinCloses()
	ln, fds, err := senderFds()
	if err != nil {
		return err
	}
	defer ln.Close()
	return blocking.Serve(3, fds, 10*time.Second)
}
