//go:build linux

package harness_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// Child side.

// packetEcho answers each datagram with "<generation>:<datagram>" until
// paused.
type packetEcho struct {
	pc      net.PacketConn
	pausing atomic.Bool
	done    chan struct{}
	err     error
}

func startPacketEcho(pc net.PacketConn, generation string) *packetEcho {
	e := &packetEcho{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) || !e.pausing.Load() {
					e.err = err
				}
				return
			}
			reply := generation + ":" + string(buf[:n])
			if _, err := pc.WriteTo([]byte(reply), from); err != nil {
				e.err = err
				return
			}
		}
	}()
	return e
}

// pause stops reading: datagrams queue in the socket from then on.
func (e *packetEcho) pause() error {
	e.pausing.Store(true)
	e.pc.SetReadDeadline(time.Unix(1, 0))
	<-e.done
	return e.err
}

// udpOld answers datagrams on a UDP socket and offers it on the hand-off
// socket Args[0]. On "pause" it stops reading, as a process about to hand
// its socket over does.
func udpOld(c *harness.Child) error {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	fd, err := rawFD(pc)
	if err != nil {
		return err
	}
	e := startPacketEcho(pc, "old")
	stop, err := offer(c, c.Args[0], false, &graceful.Server{
		Handler: graceful.PacketConnHandler(pc, graceful.Meta{"name": "udp"}),
	})
	if err != nil {
		e.pause()
		return err
	}
	if err := c.Control.Send("serving", listenerInfo{Addr: pc.LocalAddr().String(), FD: fd}); err != nil {
		stop()
		e.pause()
		return err
	}
	return commands(c, map[string]func() error{
		"pause": func() error {
			if err := e.pause(); err != nil {
				return err
			}
			return c.Control.Send("paused", nil)
		},
		"finish": func() error {
			err := stop()
			e.pause()
			return errors.Join(err, pc.Close())
		},
	})
}

// udpNew takes the UDP socket from the hand-off socket Args[0] and
// answers the datagrams, first those queued in it.
func udpNew(c *harness.Child) error {
	conn, got, err := receiveOne(c)
	if err != nil {
		return err
	}
	pc, err := graceful.FdPacketConn(got.Num)
	if err != nil {
		conn.Close()
		return err
	}
	defer pc.Close()
	e := startPacketEcho(pc, "new")
	if err := ready(conn); err != nil {
		e.pause()
		return err
	}
	if err := c.Control.Send("serving", nil); err != nil {
		e.pause()
		return err
	}
	return commands(c, map[string]func() error{
		"finish": func() error {
			return errors.Join(e.pause(), pc.Close())
		},
	})
}

// Parent side.

// datagrams sends numbered datagrams to a server and records who answered
// each.
type datagrams struct {
	pc   net.PacketConn
	to   net.Addr
	done chan struct{}

	mu      sync.Mutex
	answers map[int][]string // datagram number -> generations that answered
	err     error
}

func startDatagrams(to string) *datagrams {
	GinkgoHelper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr, err := net.ResolveUDPAddr("udp", to)
	Expect(err).NotTo(HaveOccurred())
	d := &datagrams{pc: pc, to: addr, done: make(chan struct{}), answers: map[int][]string{}}
	pc.SetReadDeadline(time.Now().Add(2 * time.Minute))
	go d.read()
	DeferCleanup(func() {
		pc.Close()
		<-d.done
	})
	return d
}

func (d *datagrams) read() {
	defer close(d.done)
	buf := make([]byte, 512)
	for {
		n, _, err := d.pc.ReadFrom(buf)
		if err != nil {
			return // closed at the end of the spec
		}
		generation, num, ok := strings.Cut(string(buf[:n]), ":")
		i, err := strconv.Atoi(num)
		d.mu.Lock()
		if !ok || err != nil {
			d.err = fmt.Errorf("bad answer %q", buf[:n])
		} else {
			d.answers[i] = append(d.answers[i], generation)
		}
		d.mu.Unlock()
	}
}

// send sends datagrams first to last-1.
func (d *datagrams) send(first, last int) {
	GinkgoHelper()
	for i := first; i < last; i++ {
		_, err := d.pc.WriteTo([]byte(strconv.Itoa(i)), d.to)
		Expect(err).NotTo(HaveOccurred())
	}
}

// answered returns who answered datagrams first to last-1 ("" for none,
// "a,b" for two answers).
func (d *datagrams) answered(first, last int) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		StopTrying("a bad answer").Wrap(d.err).Now()
	}
	out := make([]string, 0, last-first)
	for i := first; i < last; i++ {
		out = append(out, strings.Join(d.answers[i], ","))
	}
	return out
}

// all is n times s.
func all(n int, s string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

var _ = Describe("handing over a UDP socket", Label("harness"), harnesstest.Repeat(), func() {
	BeforeEach(func() { trackLeaks() })

	It("hands a UDP socket over, and the new process answers every datagram queued before and during the hand-off, once", func() {
		sock := socketIn(tempDir())
		old := startAccounted(harness.Cmd{Helper: "udp-old", Args: []string{sock}})
		var oldInfo listenerInfo
		old.await("serving", &oldInfo)
		oldBefore := old.fd(oldInfo.FD)
		d := startDatagrams(oldInfo.Addr)

		d.send(0, 20)
		Eventually(d.answered).WithArguments(0, 20).Should(Equal(all(20, "old")))

		By("queueing datagrams while the old process no longer reads")
		old.tell("pause", nil)
		old.await("paused", nil)
		d.send(20, 60)

		nu := startAccounted(harness.Cmd{Helper: "udp-new", Args: []string{sock}})
		By("sending more while the new process takes the socket")
		d.send(60, 80)
		var got []receivedFD
		nu.await("received", &got)
		expectReceivedLike(nu, got, []harness.FD{oldBefore})
		d.send(80, 90)
		nu.tell("serve", nil)
		nu.await("serving", nil)
		var handoff outcome
		old.await("handoff", &handoff)
		Expect(handoff).To(Equal(outcome{}))

		d.send(90, 100)
		Eventually(d.answered).WithArguments(20, 100).Should(Equal(all(80, "new")))
		By("a last datagram, whose answer comes after any repeated one")
		d.send(100, 101)
		Eventually(d.answered).WithArguments(100, 101).Should(Equal([]string{"new"}))
		Expect(d.answered(0, 101)).To(Equal(append(all(20, "old"), all(81, "new")...)))

		old.tell("finish", nil)
		old.finish()
		nu.tell("finish", nil)
		nu.finish()
	})
})
