//go:build linux

package graceful_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Issue 11's "What broke": each spec plays an attacker (or a faulty peer)
// on the same machine, with real processes where the attack needs many
// descriptors or another user.

// threads is this process's count of OS threads.
func threads() int {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return -1
	}
	return len(entries)
}

// rss is this process's resident memory, in bytes.
func rss() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb << 10
		}
	}
	return -1
}

// fdCount is how many descriptors this process has open.
func fdCount() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// peak samples f every few milliseconds until stop is called, which
// returns the largest value seen.
func peak(f func() int) (stop func() int) {
	var (
		most = f()
		quit = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(2 * time.Millisecond):
				most = max(most, f())
			}
		}
	}()
	return func() int {
		close(quit)
		<-done
		return max(most, f())
	}
}

// abstractAddr is a fresh abstract socket name.
func abstractAddr() string {
	return fmt.Sprintf("@graceful-test-%d-%d", os.Getpid(), nextAbstract.Add(1))
}

var nextAbstract atomic.Int64

// lineCounter is a slog.Handler that counts records per level and keeps
// their text.
type lineCounter struct {
	mu     sync.Mutex
	levels map[slog.Level]int
	text   bytes.Buffer
}

func newLineCounter() *lineCounter { return &lineCounter{levels: map[slog.Level]int{}} }

func (l *lineCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *lineCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.levels[r.Level]++
	fmt.Fprintf(&l.text, "%v %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&l.text, " %s=%v", a.Key, a.Value); return true })
	l.text.WriteByte('\n')
	return nil
}
func (l *lineCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lineCounter) WithGroup(string) slog.Handler      { return l }

func (l *lineCounter) count(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.levels[level]
}

func (l *lineCounter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.String()
}

// floodSize is how many connections each attacker process opens, and how
// many attackers there are: a few thousand in all by default, 20,000 with
// GRACEFUL_FLOOD_FULL=1.
func floodSize() (procs, each int) {
	if os.Getenv("GRACEFUL_FLOOD_FULL") != "" {
		return 10, 2000
	}
	return 3, 1000
}

var _ = Describe("a Server under a flood of connections", Label("flood"), Serial, func() {
	DescribeTable("stays within a few threads and a few KiB a connection, and serves a receiver that comes mid-flood",
		func(attacker *syscall.SysProcAttr, mode string) {
			if attacker != nil {
				needRoot()
			}
			addr := abstractAddr() // no file permissions: every user reaches it
			ln, err := net.Listen("unix", addr)
			Expect(err).NotTo(HaveOccurred())
			var (
				dones atomic.Int64
				log   = newLineCounter()
				set   = pipeFds(1)
			)
			srv := &graceful.Server{
				Handler: graceful.FdHandler(set[0], nil),
				Logger:  slog.New(log),
				Done:    func(error) { dones.Add(1) },
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			DeferCleanup(func() {
				Expect(srv.Close()).To(Succeed())
				Eventually(served).WithTimeout(10 * time.Second).Should(Receive(MatchError(graceful.ErrServerClosed)))
			})

			runtime.GC()
			baseThreads, baseRSS := threads(), rss()
			stopThreads, stopRSS := peak(threads), peak(rss)
			procs, each := floodSize()
			started := time.Now()
			var attackers []*child
			for range procs {
				attackers = append(attackers, startChild("attack", attacker, addr, strconv.Itoa(each), mode))
			}

			By("a legitimate receiver arriving mid-flood")
			Eventually(dones.Load).WithTimeout(60*time.Second).Should(BeNumerically(">=", each/2), "the flood has begun")
			received := make(chan error, 1)
			var took time.Duration
			go func() {
				start := time.Now()
				err := graceful.Receive(addr, func(fd int, _ io.Reader) error { return unix.Close(fd) })
				took = time.Since(start)
				received <- err
			}()
			Eventually(received).WithTimeout(10 * time.Second).Should(Receive(BeNil()))

			connected := 0
			for _, a := range attackers {
				f := a.expectLine("ready ")
				n, _ := strconv.Atoi(f[0])
				connected += n
			}
			floodTook := time.Since(started)
			Eventually(dones.Load).WithTimeout(60*time.Second).Should(BeNumerically(">=", connected-2*graceful.DefaultMaxPending),
				"every connection but the last pending ones was served or closed")
			mostThreads, mostRSS := stopThreads(), stopRSS()
			for _, a := range attackers {
				a.stop()
			}
			AddReportEntry("flood", fmt.Sprintf("%d connections (%s) in %v: threads %d -> at most %d; RSS %d KiB -> at most %d KiB (%d bytes a connection); a receiver mid-flood took %v; %d error lines logged",
				connected, mode, floodTook.Round(time.Millisecond), baseThreads, mostThreads, baseRSS>>10, mostRSS>>10,
				(mostRSS-baseRSS)/max(connected, 1), took.Round(time.Millisecond), log.count(slog.LevelError)))

			Expect(connected).To(BeNumerically(">=", procs*each*9/10), "the attackers got their connections")
			Expect(mostThreads).To(BeNumerically("<=", 64), "OS threads")
			perConn := 4 << 10
			if raceEnabled {
				perConn *= 8 // the race detector's shadow memory
			}
			Expect(mostRSS-baseRSS).To(BeNumerically("<=", perConn*connected+(16<<20)), "memory: a few KiB a connection")
			// One error line a second at most, and the count at Close.
			Expect(log.count(slog.LevelError)).To(BeNumerically("<=", int(time.Since(started)/time.Second)+3), log.String())

			By("the server still serves")
			Expect(graceful.Receive(addr, func(fd int, _ io.Reader) error { return unix.Close(fd) })).To(Succeed())
		},
		Entry("silent, half-frame and trickling peers of its own user", nil, "mix"),
		Entry("silent, half-frame and trickling peers of a refused user", asUser(otherUser), "mix"),
	)

	It("holds no descriptor pushed at it before authentication: 60 stuffing peers leave its table within a few dozen of its baseline", func() {
		addr := abstractAddr()
		ln, err := graceful.Listen(addr)
		Expect(err).NotTo(HaveOccurred())
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		DeferCleanup(func() {
			Expect(srv.Close()).To(Succeed())
			Eventually(served).WithTimeout(10 * time.Second).Should(Receive(MatchError(graceful.ErrServerClosed)))
		})
		base := fdCount()
		stop := peak(fdCount)
		a := startChild("attack", nil, addr, "60", "stuff")
		f := a.expectLine("ready ")
		Expect(f[0]).To(Equal("60"))
		// The connections wait for the rest of their HELLO: each holds one
		// descriptor here, its socket, and nothing of what it pushed.
		most := stop()
		a.stop()
		AddReportEntry("stuffing", fmt.Sprintf("60 peers with 252 descriptors each: %d descriptors -> at most %d; %s of the peers' sendmsg refused by the kernel (SO_PASSRIGHTS)",
			base, most, f[2]))
		Expect(most - base).To(BeNumerically("<=", 60+24))
	})
})

var _ = Describe("descriptors pushed at a sender", func() {
	It("are never installed, even when they were queued before its session turned descriptor passing off", func() {
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		peer := newRawPeer(a)
		// Queued before ServeConn runs: SO_PASSRIGHTS cannot refuse these,
		// only a read without room for control data discards them.
		peer.send(hello()[:4], pipeFds(wire.MaxFdsPerBatch)...)
		base := fdCount()
		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() {})}
		served := make(chan error, 1)
		go func() { served <- srv.ServeConn(b) }()
		peer.send(hello()[4:])
		readSet(peer)
		Expect(fdCount()).To(Equal(base), "no descriptor of the peer's came in")
		peer.send(wire.AppendCount(nil, wire.TypeAck, 0))
		Expect(graceful.Ready(a)).To(Succeed())
		Expect(a.CloseWrite()).To(Succeed())
		Eventually(served).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
		Expect(fdCount()).To(Equal(base))
	})
})

var _ = Describe("a frame where HELLO is due", func() {
	It("is refused from its header: the sender reads none of a 1 MiB BATCH's payload", func() {
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		payload := bytes.Repeat([]byte{0}, 64<<10)
		header := wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.MaxPayload})
		Expect(a.SetWriteDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
		_, err := a.Write(append(header, payload...))
		Expect(err).NotTo(HaveOccurred())

		srv := &graceful.Server{Handler: graceful.CallbackHandler(func() { Fail("a session began") })}
		served := make(chan error, 1)
		go func() { served <- srv.ServeConn(b) }()
		var serr error
		Eventually(served).WithTimeout(5 * time.Second).Should(Receive(&serr))
		Expect(serr).To(MatchError(graceful.ErrMalformed))
		Expect(serr).To(MatchError(ContainSubstring("BATCH frame where HELLO or ERROR was due")))
		unread, err := unix.IoctlGetInt(rawFd(b), unix.SIOCINQ)
		Expect(err).NotTo(HaveOccurred())
		Expect(unread).To(Equal(len(payload)), "bytes of the payload left in the socket")
		newRawPeer(a).expectError(wire.CodeMalformed)
	})

	It("over the length limit, is TOO_LARGE, named as a frame and not as metadata", func() {
		p, done := rawToServer()
		p.send(wire.AppendHeader(nil, wire.Header{Type: wire.TypeHello, Length: wire.MaxPayload + 1}))
		p.expectError(wire.CodeTooLarge)
		var err error
		Eventually(done).Should(Receive(&err))
		Expect(err).To(MatchError(graceful.ErrTooLarge))
		Expect(err).NotTo(MatchError(graceful.ErrMetaTooLarge))
		Expect(err).To(MatchError(ContainSubstring("HELLO frame of 1048577 bytes, limit 1048576")))

		err, _ = receiveAgainst(&graceful.Client{Timeout: 2 * time.Second}, func(p *rawPeer) {
			welcomed(p)
			h := wire.AppendHeader(wire.AppendWelcome(nil, 1), wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.MaxPayload + 1})
			p.send(h, pipeFds(1)...)
			p.expectError(wire.CodeTooLarge)
		})
		Expect(err).To(MatchError(graceful.ErrTooLarge))
		Expect(err).NotTo(MatchError(graceful.ErrMetaTooLarge))
		Expect(err).To(MatchError(ContainSubstring("BATCH frame of 1048577 bytes, limit 1048576")))
	})
})

// rawToServer is a raw receiver connected to a fresh Server whose Handler
// sends nothing.
func rawToServer() (*rawPeer, <-chan error) {
	GinkgoHelper()
	addr, done := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {}), Timeout: 2 * time.Second})
	return dialRaw(addr), done
}

var _ = Describe("a Client's bounds", func() {
	It("ends a session at its deadline, against a sender that trickles one BATCH inside each step's deadline", func() {
		addr := socketAddr()
		ln, err := net.Listen("unix", addr)
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		stop := make(chan struct{})
		sent := make(chan int, 1)
		defer func() {
			close(stop)
			Eventually(sent).WithTimeout(5*time.Second).Should(Receive(BeNumerically(">=", 3)), "BATCH frames sent, each inside the step deadline")
		}()
		fd := pipeFds(1)
		go func() {
			defer GinkgoRecover()
			n := 0
			defer func() { sent <- n }()
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			p := newRawPeer(c.(*net.UnixConn))
			p.expect(wire.TypeHello)
			p.send(wire.AppendWelcome(nil, 1))
			for {
				select {
				case <-stop:
					return
				case <-time.After(300 * time.Millisecond): // well inside each 1s step
				}
				if sendWithFds(c.(*net.UnixConn), wire.AppendBatch(nil, records(1)), fd) != nil {
					return
				}
				n++
			}
		}()
		client := &graceful.Client{Timeout: time.Second}
		result := make(chan error, 1)
		go func() { result <- client.Receive(addr, func(fd int, _ io.Reader) error { return unix.Close(fd) }) }()
		var err2 error
		Eventually(result).WithTimeout(10 * time.Second).Should(Receive(&err2))
		Expect(err2).To(MatchError(os.ErrDeadlineExceeded))
		Expect(err2).To(MatchError(ContainSubstring("before the session deadline")))
		Expect(err2).To(MatchError(ContainSubstring(addr)))
	})

	DescribeTable("refuses a set over its limits with TOO_LARGE, from the BATCH header, and keeps nothing",
		func(client *graceful.Client, n int, meta []byte, want error) {
			err, handed := receiveAgainst(client, func(p *rawPeer) {
				welcomed(p)
				recs := make([]wire.Record, n)
				for i := range recs {
					recs[i] = wire.Record{Kind: wire.KindFile, HasMeta: meta != nil, Meta: meta}
				}
				b := wire.AppendBatch(wire.AppendWelcome(nil, 1), recs)
				p.send(wire.AppendCount(b, wire.TypeEnd, uint32(n)), pipeFds(n)...)
				if want == nil {
					p.expect(wire.TypeAck)
				} else {
					p.expectError(wire.CodeTooLarge)
				}
			})
			if want == nil {
				Expect(err).NotTo(HaveOccurred())
				Expect(handed).To(Equal(n))
				return
			}
			Expect(err).To(MatchError(want))
			Expect(err).To(MatchError(ContainSubstring("limit")))
			Expect(handed).To(BeZero())
		},
		Entry("descriptors, at the limit", &graceful.Client{MaxFds: 10}, 10, nil, nil),
		Entry("descriptors, one over", &graceful.Client{MaxFds: 10}, 11, nil, graceful.ErrTooLarge),
		Entry("metadata bytes, at the limit", &graceful.Client{MaxMetaBytes: 300}, 3, make([]byte, 100), nil),
		Entry("metadata bytes, one over", &graceful.Client{MaxMetaBytes: 299}, 3, make([]byte, 100), graceful.ErrTooLarge),
	)
})

// sendWithFds writes b with fds on its first byte.
func sendWithFds(c *net.UnixConn, b []byte, fds []int) error {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	return err
}

var _ = Describe("a receiver that acknowledges and never says READY", func() {
	It("keeps the next receiver out no longer than the READY deadline: a Receive started 1 s later succeeds within 15 s (defaults)", func() {
		var (
			mu       sync.Mutex
			outcomes []error
		)
		addr, _ := serve(&graceful.Server{
			Handler: graceful.CallbackHandler(func() {}),
			Done: func(err error) {
				mu.Lock()
				outcomes = append(outcomes, err)
				mu.Unlock()
			},
		})
		p := dialRaw(addr)
		p.send(hello())
		Expect(readSet(p)).To(BeZero())
		p.send(wire.AppendCount(nil, wire.TypeAck, 0))
		<-time.After(time.Second) // the scenario: the next receiver comes a second later

		result := make(chan error, 1)
		go func() { result <- graceful.Receive(addr, func(int, io.Reader) error { return nil }) }()
		Eventually(result).WithTimeout(15 * time.Second).Should(Receive(BeNil()))
		seen := func() []error {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(outcomes)
		}
		Eventually(seen).Should(ContainElement(SatisfyAll(MatchError(graceful.ErrNotReady), MatchError(os.ErrDeadlineExceeded))),
			"the first session ended at the READY deadline")
		Expect(seen()).To(ContainElement(MatchError(graceful.ErrBusy)), "the second receiver was told BUSY meanwhile")
	})
})

var _ = Describe("a Handler that takes seconds", func() {
	It("does not make another receiver time out: it is told BUSY, and Receive asks again until it gets the set", func() {
		release := make(chan struct{})
		var calls atomic.Int32
		srv := &graceful.Server{
			Timeout: time.Second,
			Handler: graceful.HandlerFunc(func(net.Conn, graceful.ResponseWriter) {
				if calls.Add(1) == 1 {
					<-release
				}
			}),
		}
		addr, done := serve(srv)
		var once sync.Once
		free := func() { once.Do(func() { close(release) }) }
		DeferCleanup(free) // before the Server's Close, should the spec fail
		first := make(chan error, 1)
		go func() { first <- graceful.Receive(addr, func(int, io.Reader) error { return nil }) }()
		Eventually(calls.Load).Should(BeNumerically("==", 1))

		By("a second receiver is answered BUSY")
		p := dialRaw(addr)
		p.send(hello())
		p.expectError(wire.CodeBusy)
		Eventually(done).Should(Receive(MatchError(graceful.ErrBusy)))

		By("a third, with Receive, asks again until the Handler is done")
		third := make(chan error, 1)
		go func() {
			third <- (&graceful.Client{Timeout: time.Second}).Receive(addr, func(int, io.Reader) error { return nil })
		}()
		Eventually(done).Should(Receive(MatchError(graceful.ErrBusy)), "the third was told BUSY")
		free()
		Eventually(first).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
		Eventually(third).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
	})
})

var _ = Describe("a sender that dies after END while the callbacks run", func() {
	It("leaves the receiver with the whole set and an error matching ErrUnconfirmed, not ErrPeerClosed", func() {
		var p *rawPeer
		fds := pipeFds(3)
		var got []int
		a, b := socketPair()
		defer a.Close()
		p = newRawPeer(b)
		result := make(chan error, 1)
		go func() {
			result <- graceful.ReceiveFrom(a, func(fd int, _ io.Reader) error {
				if len(got) == 0 {
					p.c.Close() // the sender dies
				}
				got = append(got, fd)
				return nil
			})
		}()
		welcomed(p)
		batch := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(3))
		p.send(wire.AppendCount(batch, wire.TypeEnd, 3), fds...)
		var err error
		Eventually(result).WithTimeout(5 * time.Second).Should(Receive(&err))
		Expect(err).To(MatchError(graceful.ErrUnconfirmed))
		Expect(err).NotTo(MatchError(graceful.ErrPeerClosed))
		Expect(got).To(HaveLen(3), "the set is the caller's")
		for i, fd := range got {
			Expect(identityOf(fd)).To(Equal(identityOf(fds[i])))
			unix.Close(fd)
		}
	})

	It("does the same with Receive against a sender process that is killed", func() {
		dir := socketAddr()
		srv := startChild("serve", nil, dir, "default")
		srv.expectLine("ready")
		var got []int
		err := graceful.Receive(dir, func(fd int, _ io.Reader) error {
			if len(got) == 0 {
				srv.kill()
			}
			got = append(got, fd)
			return nil
		})
		Expect(err).To(MatchError(graceful.ErrUnconfirmed))
		Expect(err).NotTo(MatchError(graceful.ErrPeerClosed))
		Expect(got).To(HaveLen(1))
		unix.Close(got[0])
	})
})

var _ = Describe("a Server's pending connections", func() {
	It("are at most MaxPending: the one waiting longest for its HELLO is closed when another arrives, and Done says why", func() {
		addr, done := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {}), MaxPending: 2})
		first := dialRaw(addr)
		first.send(hello()[:3]) // half a header: it waits for the rest
		// Each connection past MaxPending closes one that has waited
		// longer: the first, once its goroutine waits for its HELLO (how
		// soon is the scheduler's business, hence a few tries; the Server
		// reports each closed connection to Done, whose channel holds 64).
		var others []*rawPeer
		for len(others) < 10 && !closedNow(first) {
			others = append(others, dialRaw(addr))
		}
		Eventually(closedNow).WithArguments(first).Should(BeTrue(), "the first connection is still open after %d more", len(others))
		var err error
		Eventually(done).Should(Receive(&err))
		Expect(err).To(MatchError(ContainSubstring("MaxPending")))

		By("the newest are still served")
		last := others[len(others)-1]
		last.send(hello())
		last.expect(wire.TypeWelcome)
		if len(others) > 1 {
			previous := others[len(others)-2]
			previous.send(hello())
			previous.expectError(wire.CodeBusy)
		}
	})
})

var _ = Describe("a Server at MaxPending", func() {
	It("holds exactly MaxPending: the next connection closes one of those waiting for their HELLO", func() {
		addr, done := serve(&graceful.Server{Handler: graceful.CallbackHandler(func() {}), MaxPending: 2})
		waiting := []*rawPeer{dialRaw(addr), dialRaw(addr)}
		closed := make(chan int, len(waiting))
		for i, p := range waiting {
			go func() {
				p.c.Read(make([]byte, 1)) // the server says nothing before HELLO: this ends when it closes
				closed <- i
			}()
		}
		dialRaw(addr)
		Eventually(closed).WithTimeout(5 * time.Second).Should(Receive(BeNumerically("<", 2)))
		Eventually(done).Should(Receive(MatchError(ContainSubstring("MaxPending"))))
	})
})

var _ = Describe("a Server on a listener that is not a unix socket", func() {
	It("turns each connection away as ErrNotUnixConn, and logs its peer as unknown", func() {
		log := newLineCounter()
		done := make(chan error, 4)
		srv := &graceful.Server{
			Handler: graceful.CallbackHandler(func() {}),
			Logger:  slog.New(log),
			Done:    func(err error) { done <- err },
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		DeferCleanup(func() {
			Expect(srv.Close()).To(Succeed())
			Eventually(served).Should(Receive(MatchError(graceful.ErrServerClosed)))
		})
		c, err := net.Dial("tcp", ln.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		defer c.Close()
		Eventually(done).Should(Receive(MatchError(graceful.ErrNotUnixConn)))
		Expect(log.String()).To(ContainSubstring("peer=pid -1 uid -1 gid -1"))
	})
})

// closedNow reports whether the server has closed p's connection: the end
// of the stream (or a reset) is there to read within a few milliseconds.
func closedNow(p *rawPeer) bool {
	GinkgoHelper()
	Expect(p.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))).To(Succeed())
	_, err := p.c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

var _ = Describe("a Server's session deadline", func() {
	It("ends a session whose steps each keep within Timeout, once SessionTimeout has passed since accept", func() {
		addr, done := serve(&graceful.Server{
			Handler:        graceful.CallbackHandler(func() {}),
			Timeout:        2 * time.Second,
			SessionTimeout: 2500 * time.Millisecond,
		})
		p := dialRaw(addr)
		<-time.After(time.Second) // a slow receiver: its HELLO within the step's 2 s
		p.send(hello())
		Expect(readSet(p)).To(BeZero())
		// and no ACK: the step would allow until 3 s, the session 2.5 s
		var err error
		Eventually(done).WithTimeout(5 * time.Second).Should(Receive(&err))
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
		Expect(err).To(MatchError(ContainSubstring("no ACK before the session deadline")))
	})
})
