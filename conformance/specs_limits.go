package conformance

import (
	"errors"
	"fmt"
	"os"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
)

var limits = []string{"limits"}

// A sender that keeps every step within the receiver's deadline but never
// ends its set: one complete BATCH of one descriptor every batchEvery, the
// receiver asked for a step deadline of trickleDeadline and a session
// deadline of sessionDeadline. The suite gives up after outlast.
const (
	batchEvery      = 100 * time.Millisecond
	sessionDeadline = 2 * time.Second
	outlast         = 3 * sessionDeadline
)

// endlessBatches plays that sender.
func endlessBatches(s *senderScript) error {
	if err := s.p.send(welcome()); err != nil {
		return err
	}
	t := time.NewTicker(batchEvery)
	defer t.Stop()
	stop := time.After(outlast)
	for n := 0; ; n++ {
		if err := s.p.send(batchOf(s.set[:1]), s.set[0].fd); err != nil {
			s.run.note("the implementation stopped the set after %d BATCH frames: %v", n, err)
			return nil
		}
		select {
		case <-t.C:
		case <-stop:
			s.run.flags = append(s.run.flags, "outlasted")
			s.run.note("the implementation still read after %d BATCH frames and %v", n+1, outlast)
			return nil
		}
	}
}

func (r *receiverRun) flagged(name string) bool {
	for _, f := range r.flags {
		if f == name {
			return true
		}
	}
	return false
}

// tooLargeSet registers a receiver scenario that sends more than the
// limits the implementation was given (LIM-2).
func (e *env) overLimit(name string, request map[string]any, fixtures func() (fixtureSet, error), script func(s *senderScript) error) {
	e.rejects(badSender{name: name, ids: "LIM-2", codes: []wire.Code{wire.CodeTooLarge}, codeIsTheRule: true, patient: true,
		needs: limits, request: request, fixtures: fixtures, script: script, midSession: true, survives: true})
}

// metaSet is n files with metadata of the given sizes.
func metaSet(sizes ...int) func() (fixtureSet, error) {
	return func() (fixtureSet, error) {
		s, err := fileSet(len(sizes))
		for i, f := range s {
			f.withMeta(make([]byte, sizes[i]))
			for j := range f.meta {
				f.meta[j] = byte('a' + i)
			}
		}
		return s, err
	}
}

func limitSpecs(e *env) {
	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.describe("a sender that sends a BATCH of one descriptor every 100 ms without end, each within the step deadline", func() {
			run := e.lazyReceiver(receiverScenario{fixtures: one, needs: limits, timeout: trickleDeadline,
				request: map[string]any{"session_timeout_ms": ms(sessionDeadline)}, script: endlessBatches})
			e.verify("ends the session at its session deadline, without ERROR, and keeps nothing", "LIM-1", func() {
				r := run()
				r.mustRun()
				Expect(r.flagged("outlasted")).To(BeFalse(), "the session outlasted its deadline of %v three times over%s", sessionDeadline, r.transcript())
				r.expectFailed()
				r.expectNothingDelivered()
				Expect(r.errorCodes()).To(BeEmpty(), "an ERROR frame for a deadline"+r.transcript())
				r.expectNoLeak()
			})
		})

		max4 := map[string]any{"max_fds": 4, "max_meta_bytes": 100}
		e.delivers("a set exactly at the limits it was given (4 descriptors, 100 bytes of metadata)", "LIM-2", receiverScenario{
			fixtures: metaSet(25, 25, 25, 25), needs: limits, request: max4, script: (*senderScript).wholeSession})
		e.overLimit("a set of 5 descriptors in one BATCH, over a limit of 4", max4, metaSet(1, 1, 1, 1, 1), (*senderScript).wholeSession)
		e.overLimit("a set of 5 descriptors in BATCH frames of 3 and 2, over a limit of 4", max4, metaSet(1, 1, 1, 1, 1),
			func(s *senderScript) error {
				if err := s.p.send(frames(welcome(), batchOf(s.set[:3])), s.set[:3].fds()...); err != nil {
					return err
				}
				return s.p.send(frames(batchOf(s.set[3:]), endOf(5)), s.set[3:].fds()...)
			})
		e.overLimit("a set of 101 bytes of metadata, over a limit of 100", max4, metaSet(50, 51), (*senderScript).wholeSession)
		e.describe("a BATCH whose header crosses the limit, its payload held back", func() {
			e.overLimit("is refused from its header", max4, metaSet(1, 1, 1, 1, 1), func(s *senderScript) error {
				b := batchOf(s.set)
				return s.p.send(frames(welcome(), b[:wire.HeaderSize]), s.set.fds()...)
			})
		})
	})

	e.describe("the implementation as sender", iut("sender"), func() {
		e.describe("a receiver that keeps each step within the deadline, not the session", func() {
			// Step deadline 2 s, session 2 s: ACK 1.2 s after END, READY
			// 1.2 s after ACK, READY is 2.4 s after HELLO.
			const step, pause = 2 * time.Second, 1200 * time.Millisecond
			run := e.lazySender(senderScenario{fixtures: one, needs: limits, timeout: step,
				request: map[string]any{"session_timeout_ms": ms(step), "ready_timeout_ms": ms(2 * step)},
				script: func(s *receiverScript) {
					p, l := s.open()
					if p == nil {
						return
					}
					defer p.close()
					time.Sleep(pause) // a slow peer, on purpose
					p.send(wire.AppendCount(nil, wire.TypeAck, uint32(len(l.records))))
					time.Sleep(pause)
					s.finishSession(p, l, nil, true)
					s.result()
				}})
			e.verify("ends the session at its session deadline: READY after it does not count", "LIM-1", func() {
				r := run()
				r.mustServe()
				r.expectWholeSet(r.session(0))
				Expect(r.result(0).reply.Outcome).NotTo(Equal("ready"), "READY came 2.4 s after HELLO, the session deadline was 2 s"+r.transcript())
			})
		})

		e.describe("five connections that never speak, over a limit of four pending", func() {
			run := e.lazySender(senderScenario{fixtures: one, needs: limits, timeout: e.patient(),
				request: map[string]any{"max_pending": 4},
				script: func(s *receiverScript) {
					var silent []*wirePeer
					defer func() {
						for _, p := range silent {
							p.close()
						}
					}()
					for range 5 {
						p, err := s.dial()
						if err != nil {
							return
						}
						silent = append(silent, p)
					}
					// One of the older must end (the oldest first, or the
					// oldest whose HELLO the sender is waiting for); the
					// newest must not have.
					first := &sessionLog{welcome: -1, endCount: -1}
					i, err := firstReadable(silent[:4], s.e.cfg.wait())
					if err != nil {
						first.end = err
					} else {
						first.frames, first.end = readAll(silent[i])
					}
					s.run.sessions = append(s.run.sessions, first)
					s.run.checks["newest"] = stillOpen(silent[4])
					s.goodSession()
				}})
			e.verify("closes an older one, keeps the newest, and still serves a receiver", "LIM-3", func() {
				r := run()
				r.mustServe()
				Expect(r.session(0).end).NotTo(HaveOccurred(), "no older pending connection was closed"+r.transcript())
				Expect(r.checks["newest"]).NotTo(HaveOccurred(), "the newest pending connection"+r.transcript())
				r.expectRecords(r.session(1))
			})
		})

		e.describe("forty connections that never speak", func() {
			const flood = 40
			run := e.lazySender(senderScenario{fixtures: one, timeout: e.patient(), script: func(s *receiverScript) {
				var silent []*wirePeer
				defer func() {
					for _, p := range silent {
						p.close()
					}
				}()
				for range flood {
					p, err := s.dial()
					if err != nil {
						return
					}
					silent = append(silent, p)
				}
				// Served after the flood: the implementation has accepted
				// every silent connection by then.
				s.goodSession()
				s.run.counts = map[string]int{}
				if n, err := threads(s.run.a.holder); err == nil {
					s.run.counts["threads"] = n
				}
				if t, err := table(s.run.a.holder); err == nil {
					s.run.counts["descriptors"] = len(t)
				}
			}})
			e.verify("do not stop a receiver, and cost no thread each", "LIM-4", func() {
				r := run()
				r.mustServe()
				r.expectRecords(r.session(0))
				Expect(r.counts).To(HaveKey("threads"), r.transcript())
				Expect(r.counts["threads"]).To(BeNumerically("<=", r.threadsBefore+6),
					"threads with %d connections pending (%d when it began to serve)%s", flood, r.threadsBefore, r.transcript())
				Expect(r.counts["descriptors"]).To(BeNumerically("<=", len(r.tableBefore)+flood+2),
					"descriptors with %d connections pending (%d when it began to serve)%s", flood, len(r.tableBefore), r.transcript())
			})
		})
	})
}

// stillOpen reports an error unless the implementation has neither
// written to nor closed the connection: a read that would block.
func stillOpen(p *wirePeer) error {
	raw, err := p.c.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var rerr error
	buf := make([]byte, 1)
	if err := raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_PEEK)
		return true
	}); err != nil {
		return err
	}
	switch {
	case errors.Is(rerr, unix.EAGAIN):
		return nil
	case rerr != nil:
		return fmt.Errorf("it was closed: %w", rerr)
	case n == 0:
		return errorString("it was closed")
	}
	return errorString("the implementation wrote to it")
}

// repeat is n copies of v.
func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// firstReadable waits until one of peers has something to read (data, or
// its end) and returns its index.
func firstReadable(peers []*wirePeer, wait time.Duration) (int, error) {
	pfds := make([]unix.PollFd, len(peers))
	for i, p := range peers {
		raw, err := p.c.SyscallConn()
		if err != nil {
			return -1, err
		}
		raw.Control(func(fd uintptr) { pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN} })
	}
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return -1, fmt.Errorf("none of %d connections ended within %v", len(peers), wait)
		}
		n, err := unix.Poll(pfds, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, os.NewSyscallError("poll", err)
		}
		if n > 0 {
			for i, pfd := range pfds {
				if pfd.Revents != 0 {
					return i, nil
				}
			}
		}
	}
}
