// Command godemo is the Go twin of example/python/demo.py: the same web
// service, the same conventions (a listener named "http" in graceful
// metadata and in the descriptor store, READY=1 once it serves, a drain
// on SIGTERM), so that a Python generation and a Go generation hand the
// listener to each other under graceful-supervisor.
//
//	go build -o /tmp/godemo ./example/python/godemo
//	graceful-supervisor -handoff /tmp/demo.sock -- /tmp/godemo -handoff /tmp/demo.sock
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

const name = "http"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on at a first start")
	handoff := flag.String("handoff", "/tmp/graceful-example.sock", "graceful hand-off socket")
	flag.Parse()
	if err := run(*addr, *handoff); err != nil {
		log.Fatal(err)
	}
}

func run(addr, handoff string) error {
	// Signals first: a stop that comes right after READY=1 is not lost.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	ln, how, err := listener(addr, handoff)
	if err != nil {
		return err
	}
	fmt.Printf("serving http on %s (%s)\n", ln.Addr(), how)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from go pid %d\n", os.Getpid())
	})}
	drainer := graceful.NewHTTPDrainer(srv)
	go drainer.Serve(ln)

	// The previous generation may still serve the hand-off socket until it
	// hears that this one is ready: the server takes the path in the
	// background.
	hs := &graceful.Server{Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": name})}
	go hs.ListenAndServe(handoff)
	if _, err := graceful.SdStore(name, ln.(*net.TCPListener)); err != nil {
		return err
	}
	if _, err := graceful.SdNotify(graceful.NotifyReady, graceful.NotifyStatus("serving http on "+ln.Addr().String())); err != nil {
		return err
	}

	<-stop
	graceful.SdNotify(graceful.NotifyStopping)
	hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = drainer.Drain(ctx)
	fmt.Println("stopped")
	return err
}

// listener takes the listener over from the serving generation, else from
// socket activation, else listens anew.
func listener(addr, handoff string) (net.Listener, string, error) {
	var ln net.Listener
	take := func(fd int, meta io.Reader) error {
		m, err := graceful.MetaFrom(meta)
		if err != nil || m["name"] != name || ln != nil {
			unix.Close(fd)
			return err
		}
		ln, err = graceful.FdListener(fd)
		return err
	}
	err := graceful.Receive(handoff, take)
	if err == nil && ln != nil {
		return ln, "took it over", nil
	}
	if errors.Is(err, graceful.ErrNoServer) {
		err = graceful.ReceiveActivation(take)
		if err == nil && ln != nil {
			return ln, "from socket activation", nil
		}
	}
	if errors.Is(err, graceful.ErrNotActivated) {
		ln, err = net.Listen("tcp", addr)
		return ln, "listening anew", err
	}
	if err == nil {
		err = fmt.Errorf("no descriptor named %q", name)
	}
	return nil, "", err
}
