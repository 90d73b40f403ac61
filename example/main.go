// Command example is a web server that restarts without dropping a
// request: on SIGHUP it starts a new instance of itself, which takes the
// listening socket over graceful's unix socket; once the new instance
// serves, the old one drains and exits.
//
//	go build -o /tmp/example ./example && /tmp/example &
//	while curl -fsS localhost:8080; do :; done   # in another terminal: never fails
//	kill -HUP %1                                   # restart as often as you like
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
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve HTTP on")
	sock := flag.String("socket", "/tmp/graceful-example.sock", "unix socket for the hand-off")
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("[pid %d] ", os.Getpid()))
	if err := run(*addr, *sock); err != nil {
		log.Fatal(err)
	}
}

func run(addr, sock string) error {
	ln, err := takeOver(sock)
	if errors.Is(err, graceful.ErrNoServer) {
		log.Printf("first start: listening on %s", addr)
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return err
	}

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d\n", os.Getpid())
	})}
	drainer := graceful.NewHTTPDrainer(srv)
	go drainer.Serve(ln)

	handedOver := make(chan error, 1)
	handoff := &graceful.Server{
		Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": "http"}),
		Done: func(err error) {
			select {
			case handedOver <- err:
			default:
			}
		},
	}
	go handoff.ListenAndServe(sock)
	log.Printf("serving on %s; kill -HUP %d to restart", ln.Addr(), os.Getpid())

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	for sig := range signals {
		if sig != syscall.SIGHUP {
			break
		}
		if err := restart(handedOver); err != nil {
			log.Printf("restart failed, still serving: %v", err)
			continue
		}
		break
	}
	handoff.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = drainer.Drain(ctx)
	log.Printf("drained, exiting")
	return err
}

// takeOver receives the listener from a running instance.
func takeOver(sock string) (net.Listener, error) {
	var ln net.Listener
	err := graceful.Receive(sock, func(fd int, meta io.Reader) error {
		m, err := graceful.MetaFrom(meta)
		if err != nil || m["name"] != "http" {
			syscall.Close(fd)
			return fmt.Errorf("unexpected descriptor %v: %v", m, err)
		}
		ln, err = graceful.FdListener(fd)
		return err
	})
	if err == nil {
		log.Printf("took over %s", ln.Addr())
	}
	return ln, err
}

// restart starts a new instance and waits until it has taken over.
func restart(handedOver <-chan error) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-handedOver:
		return err
	case err := <-exited:
		return fmt.Errorf("new instance exited before taking over: %v", err)
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		return errors.New("new instance did not take over within a minute")
	}
}
