package underload

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/gracefulfd/graceful/graceful"
)

// Demo roles: one process of a demo service generation.
const (
	RoleGraceful          = "load-graceful"
	RoleTableflipShutdown = "load-tableflip-shutdown"
	RoleTableflipDrainer  = "load-tableflip-drainer"
)

const (
	sockEnv = "GF_BENCH_SOCK"
	genEnv  = "GF_BENCH_GEN"
	// stepTimeout bounds each hand-off and each drain.
	stepTimeout = 5 * time.Second
)

// Roles maps each demo role to its body, for harness.Main.
var Roles = map[string]func() error{
	RoleGraceful:          gracefulDemo,
	RoleTableflipShutdown: func() error { return tableflipDemo(false) },
	RoleTableflipDrainer:  func() error { return tableflipDemo(true) },
}

func handler(gen string) http.Handler {
	body := []byte("gen " + gen + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) })
}

// stdinClosed is closed when the driver closes this process's stdin: the
// end of the run.
func stdinClosed() <-chan struct{} {
	c := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(c)
	}()
	return c
}

// gracefulDemo is one generation of the graceful demo. Generation 0
// listens; every later one receives the listener from its predecessor,
// starts serving, says READY, and offers the listener on the same socket
// path. A generation drains with graceful.HTTPDrainer and exits once its
// successor said READY (or when the driver ends the run).
func gracefulDemo() error {
	sock, gen := os.Getenv(sockEnv), os.Getenv(genEnv)
	end := stdinClosed()
	srv := &http.Server{Handler: handler(gen), ReadHeaderTimeout: stepTimeout}
	drainer := graceful.NewHTTPDrainer(srv)

	var ln net.Listener
	var predecessor *net.UnixConn
	if gen == "0" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ln = l
	} else {
		c := &graceful.Client{Timeout: stepTimeout}
		conn, err := c.Dial(sock)
		if err != nil {
			return err
		}
		defer conn.Close()
		err = c.ReceiveFrom(conn, func(fd int, _ io.Reader) error {
			if ln != nil {
				syscall.Close(fd)
				return errors.New("more than one descriptor")
			}
			l, err := graceful.FdListener(fd)
			ln = l
			return err
		})
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return err
		}
		predecessor = conn
	}
	go drainer.Serve(ln)

	handedOff := make(chan struct{}, 1)
	offer := &graceful.Server{
		Handler:      graceful.ListenerHandler(ln, nil),
		Timeout:      stepTimeout,
		ReadyTimeout: stepTimeout,
		Done: func(err error) {
			if err == nil {
				select {
				case handedOff <- struct{}{}:
				default:
				}
			}
		},
	}
	// Say READY, then take over the socket path before saying "serving":
	// the predecessor closes its Server once it has our READY, and
	// graceful.Listen replaces its socket only once it is stale; the next
	// generation then finds this one there.
	if predecessor != nil {
		if err := graceful.Ready(predecessor); err != nil {
			return err
		}
	}
	hl, err := listenWhenFree(sock)
	if err != nil {
		return err
	}
	go offer.Serve(hl)
	defer offer.Close()
	fmt.Printf("serving %s %s\n", gen, ln.Addr())

	select {
	case <-handedOff:
		offer.Close() // the successor listens at the path once this is closed
	case <-end:
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	return drainer.Drain(ctx)
}

// listenWhenFree places this generation's socket at sock once no server
// answers there any more (the predecessor closes its own once it has our
// READY), as graceful's Server.ListenAndServe does.
func listenWhenFree(sock string) (net.Listener, error) {
	deadline := time.Now().Add(stepTimeout)
	for {
		ln, err := graceful.Listen(sock)
		if !errors.Is(err, graceful.ErrAddrInUse) || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(time.Millisecond)
	}
}

// tableflipDemo is one generation of a tableflip service: SIGHUP runs an
// upgrade; once the new generation is ready this one drains and exits.
// With drainer it drains with graceful.HTTPDrainer, otherwise with
// http.Server.Shutdown, as tableflip's own example does.
func tableflipDemo(drainer bool) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	end := stdinClosed()
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: stepTimeout})
	if err != nil {
		return err
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(strconv.Itoa(os.Getpid())), ReadHeaderTimeout: stepTimeout}
	var d *graceful.HTTPDrainer
	if drainer {
		d = graceful.NewHTTPDrainer(srv)
		go d.Serve(ln)
	} else {
		go srv.Serve(ln)
	}
	if err := upg.Ready(); err != nil {
		return err
	}
	fmt.Printf("serving %d %s\n", os.Getpid(), ln.Addr())
	for done := false; !done; {
		select {
		case <-hup:
			if err := upgrade(upg); err != nil {
				fmt.Printf("refused %d %v\n", os.Getpid(), err)
			}
		case <-upg.Exit():
			done = true
		case <-end:
			upg.Stop()
			done = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if drainer {
		return d.Drain(ctx)
	}
	return srv.Shutdown(ctx)
}

// upgrade retries tableflip's "not ready yet", which only means its loop
// has not yet seen the Ready of a moment ago.
func upgrade(upg *tableflip.Upgrader) error {
	err := upg.Upgrade()
	for tries := 0; err != nil && err.Error() == "process is not ready yet" && tries < 1000; tries++ {
		err = upg.Upgrade()
	}
	return err
}

// lineReader hands out the lines a demo prints, with a deadline.
type lineReader struct{ lines chan string }

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{lines: make(chan string, 64)}
	go func() {
		defer close(lr.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.lines <- sc.Text()
		}
	}()
	return lr
}

func (lr *lineReader) next(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-lr.lines:
		if !ok {
			return "", io.ErrUnexpectedEOF
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no line from the demo within %v", timeout)
	}
}
