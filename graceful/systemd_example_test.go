//go:build linux

package graceful_test

import (
	"errors"
	"io"
	"log"
	"net"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// A service says it is ready, and what it does, to systemd or
// graceful-supervisor. Outside a service manager nothing is sent.
func ExampleSdNotify() {
	if _, err := graceful.SdNotify(graceful.NotifyReady, graceful.NotifyStatus("serving on :8080")); err != nil {
		log.Printf("sd_notify: %v", err)
	}
}

// A service keeps its listener in the manager's descriptor store, so that
// the next process gets it even if this one crashes.
func ExampleSdStore() {
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := graceful.SdStore("http", ln.(*net.TCPListener)); err != nil {
		log.Printf("sd_notify: %v", err)
	}
}

// A first start takes its listener from its predecessor, else from socket
// activation (systemd, graceful-supervisor's store), else listens anew.
// One callback serves both sources: both name the descriptor.
func ExampleReceiveActivation() {
	var ln net.Listener
	take := func(fd int, meta io.Reader) error {
		m, err := graceful.MetaFrom(meta)
		if err != nil || m["name"] != "http" || ln != nil {
			unix.Close(fd)
			return err
		}
		ln, err = graceful.FdListener(fd)
		return err
	}
	err := graceful.Receive("/run/app/handoff.sock", take)
	if errors.Is(err, graceful.ErrNoServer) {
		err = graceful.ReceiveActivation(take)
	}
	if errors.Is(err, graceful.ErrNotActivated) {
		ln, err = net.Listen("tcp", ":8080")
	}
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
}
