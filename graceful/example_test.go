package graceful_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/graceful"
)

func ExampleReceive() {
	var ln net.Listener
	err := graceful.Receive("/run/app/handoff.sock", func(fd int, meta io.Reader) error {
		// KindOf tells a listener from a file, whatever the metadata says.
		if kind, err := graceful.KindOf(fd); err == nil && kind == graceful.KindListener {
			var err error
			ln, err = graceful.FdListener(fd)
			return err
		}
		m, err := graceful.MetaFrom(meta) // a nil meta (none sent) gives an empty Meta
		if err != nil {
			os.NewFile(uintptr(fd), "unknown").Close()
			return err
		}
		f := os.NewFile(uintptr(fd), m["name"])
		defer f.Close()
		return nil
	})
	switch {
	case errors.Is(err, graceful.ErrNoServer):
		ln, err = net.Listen("tcp", "127.0.0.1:8080") // first start
	case errors.Is(err, graceful.ErrUnconfirmed):
		// Every descriptor reached the callback: the set is ours, even if
		// the old process did not hear us say so. Serve with it.
	case err != nil:
		fmt.Println("handoff failed:", err)
		return
	}
	_ = ln
}

func ExampleClient() {
	client := &graceful.Client{
		Timeout: 5 * time.Second, // each step; the whole session gets three
		// Take descriptors only from the service's own user, as the default
		// policy does, and say why not.
		Authorize: func(c graceful.PeerCred) error {
			if c.UID != os.Geteuid() {
				return fmt.Errorf("sender %v is not the service's user", c)
			}
			return nil
		},
		MaxFds: 64, // a set of this service never has more
	}
	err := client.Receive("@app-handoff", func(fd int, _ io.Reader) error {
		return syscall.Close(fd)
	})
	fmt.Println(err)
}

func ExampleListenAndServe() {
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		return
	}
	file, err := os.Open("/var/lib/app/state")
	if err != nil {
		return
	}
	go graceful.ListenAndServe("/run/app/handoff.sock", graceful.SequenceHandler(
		graceful.ListenerHandler(ln, nil),
		graceful.FileHandler(file, graceful.Meta{"name": file.Name()}),
	))
}

func ExampleServer() {
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		return
	}
	handedOver := make(chan struct{})
	srv := &graceful.Server{
		Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": "http"}),
		Timeout: 5 * time.Second,
		Logger:  slog.Default(),
	}
	srv.Done = func(err error) {
		if err == nil {
			// The successor has the listener and serves: stop offering it.
			// Close may be called from Done; the successor's
			// ListenAndServe waits for it, then takes the path.
			srv.Close()
			close(handedOver)
		}
	}
	go srv.ListenAndServe("/run/app/handoff.sock")
	<-handedOver
	// ... drain, then exit.
}

func ExampleListen() {
	// An abstract address: no file, no permissions. Only the credential
	// checks keep other users out, as they do for a path.
	ln, err := graceful.Listen("@app-handoff")
	if errors.Is(err, graceful.ErrAddrInUse) {
		fmt.Println("another server answers there:", err)
		return
	}
	if err != nil {
		return
	}
	srv := &graceful.Server{Handler: graceful.FdHandler(0, nil)}
	go srv.Serve(ln)
	defer srv.Close()
}

func ExampleNewSlogLogger() {
	// A logger of the Debugf/Infof/Errorf kind, as many libraries have.
	var legacy interface {
		Infof(string, ...any)
		Errorf(string, ...any)
	} = legacyLogger{}
	srv := &graceful.Server{
		Handler: graceful.CallbackHandler(func() {}),
		Logger:  graceful.NewSlogLogger(legacy),
	}
	_ = srv
}

// legacyLogger is a logger of the Debugf/Infof/Errorf kind.
type legacyLogger struct{}

func (legacyLogger) Infof(format string, args ...any)  { fmt.Printf(format+"\n", args...) }
func (legacyLogger) Errorf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func ExampleKindOf() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return
	}
	defer f.Close()
	kind, err := graceful.KindOf(int(f.Fd()))
	fmt.Println(kind, err)
	// Output: listener <nil>
}

func ExampleSendListenerTo() {
	unixLn, err := net.Listen("unix", "/run/app/handoff.sock")
	if err != nil {
		return
	}
	defer unixLn.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		return
	}
	conn, err := unixLn.Accept()
	if err != nil {
		return
	}
	defer conn.Close()
	// Application data may come first; the receiver reads it before
	// calling ReceiveFrom or ReceiveAllFrom.
	if _, err := conn.Write([]byte("v2\n")); err != nil {
		return
	}
	if err := graceful.SendListenerTo(conn, ln, nil); err != nil {
		fmt.Println(err)
	}
}

func ExampleReceiveFrom() {
	conn, err := graceful.Dial("/run/app/handoff.sock")
	if err != nil {
		return
	}
	defer conn.Close()
	var ln net.Listener
	err = graceful.ReceiveFrom(conn, func(fd int, _ io.Reader) error {
		ln, err = graceful.FdListener(fd)
		return err
	})
	if err != nil {
		return
	}
	go http.Serve(ln, nil)
	// Tell the old process it may stop, once we serve.
	graceful.Ready(conn)
}

func ExampleMeta() {
	var wire bytes.Buffer
	graceful.Meta{"name": "state", "offset": "42"}.WriteTo(&wire)

	m, err := graceful.MetaFrom(&wire)
	fmt.Println(m["name"], m["offset"], err)
	// Output: state 42 <nil>
}

func ExampleHTTPDrainer() {
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		return
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	drainer := graceful.NewHTTPDrainer(srv)
	go drainer.Serve(ln)

	// ... after the new process said it is ready:
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := drainer.Drain(ctx); err != nil {
		fmt.Println("drain:", err)
	}
}
