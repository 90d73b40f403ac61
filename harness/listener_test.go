//go:build linux

package harness_test

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// Child side.

// listenerInfo is what a listener helper reports when it serves.
type listenerInfo struct {
	Addr string
	FD   int
}

// greet serves ln: every connection it accepts gets one line, the
// generation's name, and is closed. The returned channel is closed once
// ln is closed and every greeting is written.
func greet(ln net.Listener, generation string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var greetings sync.WaitGroup
		defer greetings.Wait()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			greetings.Add(1)
			go func() {
				defer greetings.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintln(conn, generation)
			}()
		}
	}()
	return done
}

// commands runs the parent's commands until "finish", whose handler is
// the last to run.
func commands(c *harness.Child, handlers map[string]func() error) error {
	for {
		m, err := c.Control.Recv()
		if err != nil {
			return err
		}
		h := handlers[m.Type]
		if h == nil {
			return fmt.Errorf("no command %q", m.Type)
		}
		if err := h(); err != nil {
			return err
		}
		if m.Type == "finish" {
			return nil
		}
	}
}

// listenerOld is the running generation: it greets clients on a listener
// of network Args[0] and offers the listener on the hand-off socket
// Args[1], with the server timeouts Args[2] and Args[3] ("" for the
// defaults). On "stop" it closes its listener, as the old generation does
// after a hand-off, and says "stopped" once its accept loop has ended.
func listenerOld(c *harness.Child) error {
	network, sock := c.Args[0], c.Args[1]
	timeout, err := durationArg(c.Args[2])
	if err != nil {
		return err
	}
	readyTimeout, err := durationArg(c.Args[3])
	if err != nil {
		return err
	}
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(filepath.Dir(sock), "service.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return err
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		// The new generation serves the same socket at the same path:
		// closing our copy must not remove the path.
		ul.SetUnlinkOnClose(false)
	}
	defer ln.Close()
	fd, err := rawFD(ln)
	if err != nil {
		return err
	}
	accepting := greet(ln, "old")
	stop, err := offer(c, sock, false, &graceful.Server{
		Handler:      graceful.ListenerHandler(ln, graceful.Meta{"name": "service"}),
		Timeout:      timeout,
		ReadyTimeout: readyTimeout,
	})
	if err != nil {
		return err
	}
	if err := c.Control.Send("serving", listenerInfo{Addr: ln.Addr().String(), FD: fd}); err != nil {
		return err
	}
	return commands(c, map[string]func() error{
		"stop": func() error {
			ln.Close()
			<-accepting
			return c.Control.Send("stopped", nil)
		},
		"finish": func() error {
			err := stop()
			ln.Close()
			<-accepting
			return err
		},
	})
}

// listenerNew is the next generation: it takes the listener from the
// hand-off socket Args[0] and greets clients on it.
func listenerNew(c *harness.Child) error {
	conn, got, err := receiveOne(c)
	if err != nil {
		return err
	}
	ln, err := graceful.FdListener(got.Num)
	if err != nil {
		conn.Close()
		return err
	}
	defer ln.Close()
	accepting := greet(ln, "new")
	if err := ready(conn); err != nil {
		return err
	}
	fd, err := rawFD(ln)
	if err != nil {
		return err
	}
	if err := c.Control.Send("serving", listenerInfo{Addr: ln.Addr().String(), FD: fd}); err != nil {
		return err
	}
	return commands(c, map[string]func() error{
		"finish": func() error {
			ln.Close()
			<-accepting
			return nil
		},
	})
}

// Parent side.

// dialer dials an address again and again, each time reading the line the
// server answers with, until halted.
type dialer struct {
	network, addr string
	stop          chan struct{}
	done          chan struct{}
	once          sync.Once

	mu      sync.Mutex
	answers map[string]int
	errs    []string
}

// maxDials bounds a dialer that nobody halts.
const maxDials = 200000

func startDialer(network, addr string) *dialer {
	d := &dialer{network: network, addr: addr, stop: make(chan struct{}), done: make(chan struct{}), answers: map[string]int{}}
	go d.run()
	DeferCleanup(d.halt)
	return d
}

func (d *dialer) run() {
	defer close(d.done)
	deadline := time.Now().Add(2 * time.Minute)
	for range maxDials {
		select {
		case <-d.stop:
			return
		default:
		}
		if time.Now().After(deadline) {
			return
		}
		answer, err := d.dialOnce()
		d.mu.Lock()
		if err != nil {
			d.errs = append(d.errs, err.Error())
		} else {
			d.answers[answer]++
		}
		d.mu.Unlock()
	}
}

func (d *dialer) dialOnce() (string, error) {
	conn, err := net.DialTimeout(d.network, d.addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read the greeting: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// count is how many dials the generation answered.
func (d *dialer) count(generation string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.answers[generation]
}

// halt stops the dialer and returns its failed dials.
func (d *dialer) halt() []string {
	d.once.Do(func() { close(d.stop) })
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errs
}

var _ = Describe("handing over a listener", Label("harness"), harnesstest.Repeat(), func() {
	BeforeEach(func() { trackLeaks() })

	for _, network := range []string{"tcp", "unix"} {
		It("hands a "+network+" listener to a new process while clients keep dialing, and the old one still closes promptly", func() {
			sock := socketIn(tempDir())
			old := startAccounted(harness.Cmd{Helper: "listener-old", Args: []string{network, sock, "", ""}})
			var oldInfo listenerInfo
			old.await("serving", &oldInfo)
			oldBefore := old.fd(oldInfo.FD)

			By("dialing continuously from before the hand-off")
			d := startDialer(network, oldInfo.Addr)
			Eventually(d.count).WithArguments("old").Should(BeNumerically(">=", 5))

			nu := startAccounted(harness.Cmd{Helper: "listener-new", Args: []string{sock}})
			var got []receivedFD
			nu.await("received", &got)
			expectReceivedLike(nu, got, []harness.FD{oldBefore})
			Expect(got[0].Meta).To(Equal(graceful.Meta{"name": "service"}))
			nu.tell("serve", nil)
			var newInfo listenerInfo
			nu.await("serving", &newInfo)
			var handoff outcome
			old.await("handoff", &handoff)
			Expect(handoff).To(Equal(outcome{}))

			By("both processes accept on the same kernel object")
			Expect(nu.fd(newInfo.FD).ID).To(Equal(old.fd(oldInfo.FD).ID))
			Eventually(d.count).WithArguments("new").Should(BeNumerically(">=", 5))
			Expect(d.halt()).To(BeEmpty(), "failed dials during the hand-off")

			By("the old process closes its listener, with no client to wake its accept")
			old.tell("stop", nil)
			old.await("stopped", nil)

			By("the new process alone answers, and nothing was lost")
			d = startDialer(network, oldInfo.Addr)
			Eventually(d.count).WithArguments("new").Should(BeNumerically(">=", 20))
			Expect(d.halt()).To(BeEmpty(), "failed dials after the old process closed its listener")
			Expect(d.count("old")).To(BeZero())

			nu.tell("finish", nil)
			nu.finish()
			old.tell("finish", nil)
			old.finish()
		})
	}
})
