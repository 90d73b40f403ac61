package graceful_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gracefulfd/graceful/graceful"
)

func ExampleReceive() {
	var ln net.Listener
	err := graceful.Receive("/run/app/handoff.sock", func(fd int, meta io.Reader) error {
		if meta == nil { // the listener is sent without metadata below
			var err error
			ln, err = graceful.FdListener(fd)
			return err
		}
		m := graceful.Meta{}
		if _, err := m.ReadFrom(meta); err != nil {
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
	case err != nil:
		fmt.Println("handoff failed:", err)
		return
	}
	_ = ln
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
		Handler:      graceful.ListenerHandler(ln, graceful.Meta{"name": "http"}),
		Timeout:      5 * time.Second,
		ReadyTimeout: 30 * time.Second,
		Done: func(err error) {
			if err == nil {
				close(handedOver)
			}
		},
	}
	go srv.ListenAndServe("/run/app/handoff.sock")
	<-handedOver
	srv.Close()
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
