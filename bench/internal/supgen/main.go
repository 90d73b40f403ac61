// Command supgen is the generation the supervisor benchmarks run: it takes
// a TCP listener over with graceful.Receive from $GF_BENCH_HANDOFF (or
// listens anew on a first start), and then:
//
//   - without NOTIFY_SOCKET (a direct hand-off), it exits: Receive has
//     told the sender it is ready;
//   - started as a spare (graceful.SpareEnv), Receive first waits for
//     its turn, and a spare dismissed exits quietly;
//   - under a supervisor, it says READY=1, stores the listener
//     (FDSTORE=1), serves it at the same hand-off socket for its
//     successor, and exits on SIGTERM.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

func main() {
	err := run()
	if errors.Is(err, graceful.ErrSpareDismissed) {
		return // a spare whose turn never came: nothing to report
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "supgen:", err)
		os.Exit(1)
	}
}

func run() error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	path := os.Getenv("GF_BENCH_HANDOFF")
	var ln net.Listener
	err := graceful.Receive(path, func(fd int, _ io.Reader) error {
		if ln != nil {
			unix.Close(fd)
			return errors.New("more than one descriptor")
		}
		var err error
		ln, err = graceful.FdListener(fd)
		return err
	})
	if errors.Is(err, graceful.ErrNoServer) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return err
	}
	defer ln.Close()
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	// Ready first, as a service should be: it serves once it holds the
	// listener. Storing it and offering it to a successor come after.
	if _, err := graceful.SdNotify(graceful.NotifyReady); err != nil {
		return err
	}
	if _, err := graceful.SdStore("tcp", ln.(*net.TCPListener)); err != nil {
		return err
	}
	srv := &graceful.Server{Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": "tcp"})}
	go srv.ListenAndServe(path)
	defer srv.Close()
	<-stop
	return nil
}
