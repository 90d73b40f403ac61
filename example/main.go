// Command example is a web server that restarts without dropping a
// request. A new instance takes the listening socket over graceful's unix
// socket from the running one; once the new instance serves, the old one
// drains and exits.
//
// Run it under graceful-supervisor, which starts each new instance and
// stays in the foreground:
//
//	go build -o /tmp/example ./example
//	go run ./cmd/graceful-supervisor -- /tmp/example
//	while curl -fsS localhost:8080; do :; done   # in another terminal: never fails
//	go run ./cmd/graceful-supervisor restart     # restart as often as you like
//
// (SIGHUP to the supervisor restarts it too.) Under the supervisor the
// program says READY=1 once it serves, and stores its listener in the
// supervisor's descriptor store: when it dies (kill -9), the next instance
// gets the listener from the store, and clients see a delay, not a refused
// connection. The same binary runs under systemd (example/systemd).
//
// Alone, it restarts on SIGHUP by starting the new instance itself; the new
// instance is then the one to signal next (its PID is in its log line).
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

// takeOverTimeout bounds how long a new instance may take to take over.
const takeOverTimeout = time.Minute

// handoffWait bounds the wait for the predecessor to close its hand-off
// socket.
const handoffWait = 10 * time.Second

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve HTTP on")
	sock := flag.String("socket", "/tmp/graceful-example.sock", "unix socket for the hand-off")
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("[pid %d] ", os.Getpid()))
	// Signals are ours before anyone can learn our PID: a SIGHUP sent at
	// once is queued, not fatal.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	if err := run(*addr, *sock, signals); err != nil {
		log.Fatal(err)
	}
}

func run(addr, sock string, signals <-chan os.Signal) error {
	ln, err := takeOver(sock)
	if errors.Is(err, graceful.ErrNotActivated) {
		log.Printf("first start: listening on %s", addr)
		ln, err = net.Listen("tcp", addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s is taken, and nothing offers it at %s: is another instance running with another -socket? %w", addr, sock, err)
		}
	}
	if err != nil {
		return err
	}

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d\n", os.Getpid())
	})}
	drainer := graceful.NewHTTPDrainer(srv)
	go drainer.Serve(ln)

	// The hand-off socket is up before this instance says it serves, and
	// before it acts on any restart: a successor always finds it.
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
	hln, err := listenHandoff(sock)
	if err != nil {
		drainer.Drain(context.Background())
		return fmt.Errorf("hand-off socket: %w", err)
	}
	go handoff.Serve(hln)
	supervised, err := notifyReady(ln)
	if err != nil {
		log.Printf("telling the supervisor: %v", err)
	}
	if supervised {
		log.Printf("serving on %s under a supervisor: restart through it", ln.Addr())
	} else {
		log.Printf("serving on %s; kill -HUP %d to restart", ln.Addr(), os.Getpid())
	}

	var successor *child // a restart in progress
	for done := false; !done; {
		select {
		case sig := <-signals:
			switch {
			case sig != syscall.SIGHUP:
				done = true
			case supervised:
				log.Printf("under a supervisor, the supervisor restarts: graceful-supervisor restart, or SIGHUP to it")
			case successor != nil:
				log.Printf("a restart is already in progress")
			default:
				if successor, err = startSuccessor(); err != nil {
					log.Printf("restart failed, still serving: %v", err)
				}
			}
		case err := <-successor.exit():
			successor = nil
			log.Printf("restart failed, still serving: the new instance exited before taking over: %v", err)
		case err := <-handedOver:
			if err != nil {
				log.Printf("hand-off failed, still serving: %v", err)
				continue
			}
			successor.keep()
			// The successor places its own hand-off socket at the same
			// path once this one is closed.
			handoff.Close()
			// Alone, this instance goes now. Under a supervisor it waits for
			// the supervisor's SIGTERM, which comes once the successor has
			// told the supervisor too: leaving before would look like a
			// crash of the serving generation.
			done = !supervised
		}
	}
	handoff.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = drainer.Drain(ctx)
	log.Printf("drained, exiting")
	return err
}

// listenHandoff places the hand-off socket at sock. The instance this one
// took over from closes its own as soon as it has heard READY; until then
// graceful.Listen refuses to replace a live socket, and is tried again.
func listenHandoff(sock string) (net.Listener, error) {
	deadline := time.Now().Add(handoffWait)
	for {
		ln, err := graceful.Listen(sock)
		if !errors.Is(err, graceful.ErrAddrInUse) || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// takeOver receives the listener from a running instance, or from a
// supervisor's store after a crash: through the hand-off socket, or by
// socket activation. It fails with ErrNotActivated when nobody has it.
func takeOver(sock string) (net.Listener, error) {
	var ln net.Listener
	take := func(fd int, meta io.Reader) error {
		m, err := graceful.MetaFrom(meta)
		if err != nil || m["name"] != "http" || ln != nil {
			syscall.Close(fd)
			return fmt.Errorf("unexpected descriptor %v: %v", m, err)
		}
		ln, err = graceful.FdListener(fd)
		return err
	}
	err := graceful.Receive(sock, take)
	if errors.Is(err, graceful.ErrNoServer) {
		err = graceful.ReceiveActivation(take)
	}
	if err == nil {
		log.Printf("took over %s", ln.Addr())
	}
	return ln, err
}

// notifyReady tells a supervisor (or systemd), if there is one, that this
// instance serves, and stores its listener with it, so that it outlives a
// crash of this process. It reports whether a supervisor was told.
func notifyReady(ln net.Listener) (bool, error) {
	if _, err := graceful.SdStore("http", ln.(*net.TCPListener)); err != nil {
		return false, err
	}
	return graceful.SdNotify(graceful.NotifyReady)
}

// child is a new instance this one started: it takes over by itself, or
// is killed after takeOverTimeout.
type child struct {
	exited chan error
	kill   *time.Timer
}

// startSuccessor starts a new instance of this program.
func startSuccessor() (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{exited: make(chan error, 1), kill: time.AfterFunc(takeOverTimeout, func() { cmd.Process.Kill() })}
	go func() { c.exited <- cmd.Wait() }()
	return c, nil
}

// exit delivers the child's exit status should it exit before taking over;
// nil (no child) never delivers.
func (c *child) exit() <-chan error {
	if c == nil {
		return nil
	}
	return c.exited
}

// keep lets the child live on: it took over.
func (c *child) keep() {
	if c != nil {
		c.kill.Stop()
	}
}
