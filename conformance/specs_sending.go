package conformance

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/harness"
)

// stillListening proves that the suite's original listener still accepts
// after the hand-off (no shutdown(2), TRN-9).
func stillListening(f *fixture, wait time.Duration) error {
	sa, err := unix.Getsockname(f.fd)
	if err != nil {
		return err
	}
	in4 := sa.(*unix.SockaddrInet4)
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(in4.Port)), wait)
	if err != nil {
		return err
	}
	defer c.Close()
	pfd := []unix.PollFd{{Fd: int32(f.fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, ms(wait)); err != nil || n == 0 {
		return errNotAccepting
	}
	nfd, _, err := unix.Accept4(f.fd, unix.SOCK_CLOEXEC)
	if err != nil {
		return err
	}
	return unix.Close(nfd)
}

func sendingSpecs(e *env) {
	e.describe("the implementation as sender", iut("sender"), func() {
		e.describe("a set of one descriptor of each kind, read byte by byte", func() {
			run := e.lazySender(senderScenario{fixtures: mixedSet, script: func(s *receiverScript) {
				s.goodSession()
				s.result()
				s.run.checks["listener"] = stillListening(s.run.set[0], s.e.cfg.wait())
			}})
			e.verify("is WELCOME, BATCH frames and an END that counts them", "SND-1", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				r.expectWholeSet(l)
				r.expectNo(l, "SND-1")
			})
			e.verify("carries the very descriptors it was given, each with its record, in order", "SND-2 TRN-10", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				r.expectSameDescriptors(l)
				r.expectNo(l, "SND-2")
			})
			e.verify("attaches descriptors to the first byte of their BATCH or an earlier byte", "TRN-3", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				r.expectWholeSet(l)
				r.expectNo(l, "TRN-3")
			})
			e.verify("writes every frame exactly as laid out, big-endian, flags 0", "FRM-1 FRM-2", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				r.expectWholeSet(l)
				r.expectNo(l, "FRM-1", "FRM-2", "FRM-3", "FRM-4")
				Expect(l.frames[0].Header).To(Equal(wire.Header{Type: wire.TypeWelcome, Length: 2}), "WELCOME header"+r.transcript())
				Expect(l.frames[0].Payload).To(Equal([]byte{0, 1}), "WELCOME payload"+r.transcript())
				last := l.frames[len(l.frames)-1]
				Expect(last.Header).To(Equal(wire.Header{Type: wire.TypeEnd, Length: 4}), "END header"+r.transcript())
				// Re-encode the records: the bytes must be the same.
				n := 0
				for _, f := range l.frames[1 : len(l.frames)-1] {
					recs := l.records[n : n+int(f.Header.NFds)]
					n += len(recs)
					Expect(bytes.Equal(wire.AppendBatch(nil, recs)[wire.HeaderSize:], f.Payload)).To(BeTrue(), "BATCH payload"+r.transcript())
				}
			})
			e.verify("leaves the descriptors' O_NONBLOCK as it was and does not shut them down", "TRN-9", func() {
				r := run()
				r.mustServe()
				r.expectWholeSet(r.session(0))
				for i, f := range r.set {
					Expect(r.flagsAfter[i]&unix.O_NONBLOCK).To(Equal(r.flagsBefore[i]&unix.O_NONBLOCK),
						"O_NONBLOCK of the %s changed%s", f.name, r.transcript())
				}
				Expect(r.checks["listener"]).NotTo(HaveOccurred(), "the handed-over listener no longer accepts"+r.transcript())
			})
			e.verify("describes each descriptor with its true kind, or RAW", "SND-7", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				r.expectWholeSet(l)
				for i, f := range r.set {
					Expect(l.records[i].Kind).To(BeElementOf(f.kind, wire.KindRaw), "kind of the %s%s", f.name, r.transcript())
				}
			})
			e.verify("holds nothing of the session once it has ended", "ERR-2", func() {
				r := run()
				r.mustServe()
				r.expectWholeSet(r.session(0))
				r.expectTableBack()
			})
			e.verify("reports the session as ready", "ACK-2 RDY-2", func() {
				r := run()
				r.mustServe()
				Expect(r.result(0).reply.OK).To(BeTrue(), "the session failed"+r.transcript())
				Expect(r.result(0).reply.Outcome).To(Equal("ready"), r.transcript())
			})
		})

		for _, n := range []int{252, 253, 504, 505, 600} {
			e.describe(fmt.Sprintf("a set of %d descriptors, at scrambled numbers", n), Label(LabelSlow), func() {
				run := e.lazySender(senderScenario{fixtures: func() (fixtureSet, error) { return fileSet(n) }, script: goodOne})
				if n > wire.MaxFdsPerBatch {
					e.verify("is split into BATCH frames of at most 252 descriptors", "SND-3", func() {
						r := run()
						r.mustServe()
						l := r.session(0)
						r.expectNo(l, "SND-3")
						r.expectRecords(l)
						for _, f := range l.frames {
							Expect(f.Header.NFds).To(BeNumerically("<=", wire.MaxFdsPerBatch), r.transcript())
						}
					})
				}
				e.verify("carries every descriptor it was given, in order, each the same open file description", "SND-2", func() {
					r := run()
					r.mustServe()
					r.expectSameDescriptors(r.session(0))
				})
			})
		}

		// (A set whose records take exactly 1 MiB may go in one frame or
		// more: only one more byte makes splitting a rule.)
		for _, extra := range []int{1} {
			e.describe("16 descriptors whose records take 1 MiB and 1 byte", func() {
				sizes := append([]int{}, exactlyOneMiB...)
				sizes[len(sizes)-1] += extra
				run := e.lazySender(senderScenario{fixtures: metaSet(sizes...), script: goodOne})
				e.verify("are sent whole, in BATCH frames within the 1 MiB limit", "SND-6", func() {
					r := run()
					r.mustServe()
					r.expectRecords(r.session(0))
					r.expectWithinPayload(r.session(0))
				})
			})
		}

		e.describe("a connection it dials to a listening receiver", func() {
			run := e.lazySender(senderScenario{fixtures: mixedSet, dial: true, needs: []string{"dial"}, script: goodOne})
			e.verify("carries the set, as on a connection it accepted", "SND-1 SND-2", func() {
				r := run()
				r.mustServe()
				r.expectSameDescriptors(r.session(0))
				Expect(r.result(0).reply.Outcome).To(Equal("ready"), r.transcript())
			})
		})

		// Descriptors pushed at the sender (SND-9).
		e.describe("a receiver that attaches 250 descriptors to its HELLO", func() {
			run := e.lazySender(senderScenario{fixtures: one, before: stuffing, script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				defer p.close()
				s.stuff(p, hello1())
				l := s.readSet(p)
				s.run.checks["during"] = s.stuffedHeld() // the HELLO was read: the set came
				if l.end == nil {
					s.finishSession(p, l, ack(len(l.records)), true)
				}
				s.result()
				s.run.checks["after"] = s.stuffedHeld()
			}})
			e.verify("never holds one, during the session or after", "SND-9", func() {
				r := run()
				r.mustServe()
				Expect(r.checks["during"]).NotTo(HaveOccurred(), r.transcript())
				Expect(r.checks["after"]).NotTo(HaveOccurred(), r.transcript())
				r.expectTableBack()
			})
		})
		e.describe("a receiver that attaches 250 descriptors to its ACK", func() {
			run := e.lazySender(senderScenario{fixtures: one, before: stuffing, script: func(s *receiverScript) {
				p, l := s.open()
				if p == nil {
					return
				}
				defer p.close()
				s.stuff(p, ack(len(l.records)))
				s.finishSession(p, l, nil, true)
				s.result()
				s.run.checks["after"] = s.stuffedHeld()
			}})
			e.verify("never holds one", "SND-9", func() {
				r := run()
				r.mustServe()
				Expect(r.checks["after"]).NotTo(HaveOccurred(), r.transcript())
				r.expectTableBack()
			})
		})
		e.describe("ten receivers that each attach 250 descriptors to a HELLO while a session runs", func() {
			run := e.lazySender(senderScenario{fixtures: one, before: stuffing, timeout: e.patient(), script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				defer p.close()
				s.stuff(p, hello1())
				l := s.readSet(p)
				for range 10 {
					s.refusedSession(func(q *wirePeer) error { return s.stuff(q, hello1()) })
					s.result()
				}
				// Each was answered BUSY: each HELLO was read.
				s.run.checks["during"] = s.stuffedHeld()
				if l.end == nil {
					s.finishSession(p, l, ack(len(l.records)), true)
				}
				s.result()
			}})
			e.verify("never holds one of them", "SND-9", func() {
				r := run()
				r.mustServe()
				for i := 1; i <= 10; i++ {
					Expect(r.session(i).errFrame).NotTo(BeNil(), "receiver %d was not answered%s", i, r.transcript())
				}
				Expect(r.checks["during"]).NotTo(HaveOccurred(), r.transcript())
				r.expectTableBack()
			})
		})

		e.describe("a descriptor with 65 537 bytes of metadata", func() {
			run := e.lazySender(senderScenario{
				fixtures: func() (fixtureSet, error) {
					s, err := fileSet(2)
					if err == nil {
						s[1].withMeta(bytes.Repeat([]byte{'m'}, wire.MaxMetaSize+1))
					}
					return s, err
				},
				script: func(s *receiverScript) {
					p, l := s.open()
					if p == nil {
						return
					}
					defer p.close()
					if l.end == nil {
						s.finishSession(p, l, wire.AppendCount(nil, wire.TypeAck, uint32(len(l.records))), true)
					}
					s.result()
				}})
			e.verify("is refused before anything of it is sent, never truncated", "SND-5", func() {
				r := run()
				r.mustRun()
				if !r.serveReply.OK {
					return // refused up front: nothing listens, nothing sent
				}
				l := r.session(0)
				for i, rec := range l.records {
					if i == 1 {
						Fail("the oversized descriptor was sent with " + strconv.Itoa(len(rec.Meta)) + " bytes of metadata" + r.transcript())
					}
				}
				Expect(l.endCount).To(Equal(-1), "END for a set that was not sent whole"+r.transcript())
				Expect(r.result(0).reply.OK).To(BeFalse(), "the hand-off was reported as done"+r.transcript())
			})
		})

		e.describe("descriptors with exactly 65 536 bytes of metadata each, 1.25 MiB in all", func() {
			run := e.lazySender(senderScenario{
				fixtures: func() (fixtureSet, error) {
					s, err := fileSet(20)
					for i, f := range s {
						f.withMeta(bytes.Repeat([]byte{byte('a' + i)}, wire.MaxMetaSize))
					}
					return s, err
				},
				script: goodOne})
			e.verify("are sent whole", "SND-5", func() {
				r := run()
				r.mustServe()
				r.expectRecords(r.session(0))
			})
			e.verify("in BATCH frames within the 1 MiB limit", "SND-6", func() {
				r := run()
				r.mustServe()
				r.expectWholeSet(r.session(0))
				r.expectWithinPayload(r.session(0))
			})
		})

		e.describe("a set naming a descriptor that is not open", func() {
			run := e.lazySender(senderScenario{
				fixtures: one,
				serve: func(r *senderRun) []map[string]any {
					d := r.serveDescriptors()
					return append(d, map[string]any{"fd": 1000, "kind": "file", "meta": base64.StdEncoding.EncodeToString([]byte("gone"))})
				},
				script: func(s *receiverScript) {
					p, l := s.open()
					if p == nil {
						return
					}
					defer p.close()
					if l.end == nil {
						s.finishSession(p, l, wire.AppendCount(nil, wire.TypeAck, uint32(len(l.records))), true)
					}
					s.result()
				}})
			e.verify("never sends END: ERROR SENDER_FAILED at a frame boundary, or a close inside a frame", "SND-8", func() {
				r := run()
				r.mustRun()
				if !r.serveReply.OK {
					return // refused up front
				}
				l := r.session(0)
				Expect(l.endCount).To(Equal(-1), "END for a set that was not sent whole"+r.transcript())
				if !errors.Is(l.end, errMidFrame) {
					Expect(l.errFrame).NotTo(BeNil(), "neither ERROR SENDER_FAILED nor a close inside a frame"+r.transcript())
					Expect(l.errFrame.Code).To(Equal(wire.CodeSenderFailed), r.transcript())
				}
				Expect(r.result(0).reply.OK).To(BeFalse(), "the hand-off was reported as done"+r.transcript())
			})
		})
	})
}

var errNotAccepting = errorString("the listener did not accept a connection")

type errorString string

func (e errorString) Error() string { return string(e) }

// stuffing makes the object a scenario pushes at the sender: a memory
// file of its own, so that any descriptor of it in the sender's table is
// one the sender took from a peer.
func stuffing(r *senderRun) error {
	f, err := newFile()
	if err != nil {
		return err
	}
	r.stuffed = f
	return nil
}

// stuff writes frame with 250 descriptors of the stuffing object attached.
// A sender that refuses
// descriptors outright (SO_PASSRIGHTS off) makes that sendmsg fail: the
// frame then goes without them.
func (s *receiverScript) stuff(p *wirePeer, frame []byte) error {
	n := 250
	fds := make([]int, n)
	for i := range fds {
		fds[i] = s.run.stuffed.fd
	}
	err := p.send(frame, fds...)
	if p.rightsRefused {
		s.note("the sender refuses descriptors outright (SO_PASSRIGHTS off)")
	}
	return err
}

// stuffedHeld reports an error if the adapter holds a descriptor of the
// stuffing object.
func (s *receiverScript) stuffedHeld() error {
	held, err := holding(s.run.a.holder, map[harness.FileID]bool{s.run.stuffed.id: true})
	if err != nil {
		return err
	}
	if len(held) > 0 {
		return fmt.Errorf("the sender holds %d descriptors a receiver pushed at it (fd %d, ...)", len(held), held[0].Num)
	}
	return nil
}

// expectWithinPayload checks that every frame of a session kept within the
// 1 MiB limit (SND-6).
func (r *senderRun) expectWithinPayload(l *sessionLog) {
	GinkgoHelper()
	r.expectNo(l, "FRM-4")
	for _, f := range l.frames {
		Expect(f.Header.Length).To(BeNumerically("<=", wire.MaxPayload), r.transcript())
	}
}
