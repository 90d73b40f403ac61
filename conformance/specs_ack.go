package conformance

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// answeredSet registers a sender scenario in which the suite reads the
// whole set, answers with reply, optionally closes, and asks the result.
// With readAfter, it then records what the implementation writes until it
// closes, as session 1.
// shortDeadline, among answeredSet's decorators, makes its scenario wait
// for the implementation's step deadline (senderScenario.short).
type shortDeadline struct{}

func (e *env) answeredSet(name string, reply func(count int) []byte, closeAfter, readAfter bool, checks func(run func() *senderRun), decorators ...any) {
	short := false
	var rest []any
	for _, d := range decorators {
		if _, ok := d.(shortDeadline); ok {
			short = true
			continue
		}
		rest = append(rest, d)
	}
	e.describe(name, append(rest, func() {
		run := e.lazySender(senderScenario{fixtures: two, short: short, script: func(s *receiverScript) {
			p, l := s.open()
			if p == nil {
				return
			}
			defer p.close()
			if b := reply(len(l.records)); b != nil {
				if err := p.send(b); err != nil {
					s.note("reply: %v", err)
				}
			}
			if closeAfter {
				p.closeWrite()
			}
			if readAfter {
				after := &sessionLog{welcome: -1, endCount: -1}
				after.frames, after.end = readAll(p)
				s.run.sessions = append(s.run.sessions, after)
			}
			s.result()
		}})
		checks(run)
	})...)
}

func ack(n int) []byte { return wire.AppendCount(nil, wire.TypeAck, uint32(n)) }

func errorFrame(code wire.Code, msg string) []byte {
	return wire.AppendError(nil, wire.ErrorFrame{Code: code, Message: msg})
}

// rawError is an ERROR frame built byte by byte, rules broken on purpose.
func rawError(flags byte, nfds uint16, code uint16, msgLen uint16, msg []byte) []byte {
	payload := []byte{byte(code >> 8), byte(code), byte(msgLen >> 8), byte(msgLen)}
	payload = append(payload, msg...)
	h := wire.AppendHeader(nil, wire.Header{Type: wire.TypeError, NFds: nfds, Length: uint32(len(payload))})
	h[1] = flags
	return append(h, payload...)
}

// expectAnswered checks what the implementation wrote after the suite's
// answer (session 1): nothing but one ERROR with code, or nothing at all
// when code is 0; then the close.
func (r *senderRun) expectAnswered(code wire.Code) {
	Expect(len(r.sessions)).To(BeNumerically(">", 1), r.transcript())
	after := r.sessions[1]
	Expect(after.end).NotTo(HaveOccurred(), "the connection was not closed"+r.transcript())
	if code == 0 {
		Expect(after.frames).To(BeEmpty(), "an answer to an ERROR"+r.transcript())
		return
	}
	Expect(after.frames).To(HaveLen(1), "one ERROR frame"+r.transcript())
	ef, err := wire.ParseError(after.frames[0].Payload)
	Expect(after.frames[0].Header.Type).To(Equal(wire.TypeError), r.transcript())
	Expect(err).NotTo(HaveOccurred(), r.transcript())
	Expect(ef.Code).To(Equal(code), "ERROR code"+r.transcript())
}

func ackSpecs(e *env) {
	e.describe("the implementation as sender", iut("sender"), func() {
		failed := func(ids string) func(run func() *senderRun) {
			return func(run func() *senderRun) {
				e.verify("reports that the hand-off failed", ids, func() {
					r := run()
					r.mustServe()
					r.expectWholeSet(r.session(0))
					Expect(r.result(0).reply.OK).To(BeFalse(), "the hand-off was reported as done"+r.transcript())
				})
			}
		}
		wrongCount := func(run func() *senderRun) {
			failed("ACK-2")(run)
			e.verify("answers ERROR MALFORMED and closes", "ACK-2", func() {
				r := run()
				r.mustServe()
				r.expectAnswered(wire.CodeMalformed)
			})
		}
		e.answeredSet("an ACK counting one descriptor more than it sent", func(n int) []byte { return ack(n + 1) }, false, true, wrongCount)
		e.answeredSet("an ACK counting one descriptor fewer than it sent", func(n int) []byte { return ack(n - 1) }, false, true, wrongCount)
		e.answeredSet("an ACK counting no descriptor", func(int) []byte { return ack(0) }, false, true, wrongCount)
		e.answeredSet("an ERROR REJECTED instead of ACK", func(int) []byte { return errorFrame(wire.CodeRejected, "no") }, false, false, failed("ACK-2"))
		e.answeredSet("the connection closed before ACK", func(int) []byte { return nil }, true, false, failed("ACK-2"))

		e.answeredSet("an ACK and then the connection closed, without READY", ack, true, false, func(run func() *senderRun) {
			e.verify("reports the set as received, not ready", "RDY-2", func() {
				r := run()
				r.mustServe()
				r.expectWholeSet(r.session(0))
				Expect(r.result(0).reply.OK).To(BeTrue(), "the hand-off was reported as failed"+r.transcript())
				Expect(r.result(0).reply.Outcome).To(Equal("acked"), r.transcript())
			})
		})
		e.answeredSet("an ACK and then silence", ack, false, false, func(run func() *senderRun) {
			e.verify("stops waiting for READY at its deadline and does not report ready", "RDY-3", func() {
				r := run()
				r.mustServe()
				r.expectWholeSet(r.session(0))
				Expect(r.result(0).reply.OK).To(BeTrue(), "an acknowledged set reported as failed"+r.transcript())
				Expect(r.result(0).reply.Outcome).To(Equal("acked"), r.transcript())
			})
		}, Label(LabelSlow), shortDeadline{})

		// Frames where READY is awaited (RDY-2).
		for _, w := range []struct {
			name  string
			frame []byte
			code  wire.Code // its answer, 0 for none
		}{
			{"a second ACK", ack(2), wire.CodeMalformed},
			{"an ERROR", errorFrame(wire.CodeRejected, "changed my mind"), 0},
			{"a frame of unknown type 9", headerOnly(wire.Header{Type: 9}), wire.CodeMalformed},
			{"a BATCH", wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}}), wire.CodeMalformed},
		} {
			e.answeredSet("an ACK, then "+w.name+" where READY is awaited",
				func(n int) []byte { return frames(ack(n), w.frame) }, false, true, func(run func() *senderRun) {
					e.verify("reports the set as received, not ready, and answers as RDY-2 says", "RDY-2", func() {
						r := run()
						r.mustServe()
						r.expectWholeSet(r.session(0))
						Expect(r.result(0).reply.OK).To(BeTrue(), "an acknowledged set reported as failed"+r.transcript())
						Expect(r.result(0).reply.Outcome).To(Equal("acked"), r.transcript())
						r.expectAnswered(w.code)
					})
				})
		}

		// Several sessions on one connection (RDY-5).
		for _, ready := range []bool{true, false} {
			name := "a second HELLO on the connection after ACK and READY"
			if !ready {
				name = "a second HELLO on the connection right after ACK, where READY is awaited"
			}
			e.describe(name, func() {
				// Patient: a HELLO left unanswered cannot pass for a close.
				run := e.lazySender(senderScenario{fixtures: mixedSet, timeout: e.patient(), script: func(s *receiverScript) {
					p, err := s.dial()
					if err != nil {
						return
					}
					defer p.close()
					for i := range 2 {
						p.send(hello1())
						if i == 1 {
							// The sender may serve it, or close without a word.
							if f, err := p.readFrame(); err != nil {
								s.run.checks["closed"] = err
								break
							} else {
								p.unread = &f
							}
						}
						l := s.readSet(p)
						if l.end != nil {
							break
						}
						p.send(ack(len(l.records)))
						if ready || i == 1 {
							p.send(wire.AppendReady(nil))
						}
					}
					p.closeWrite()
					p.expectEOF()
					s.result()
				}})
				e.verify("starts a new session that hands over the same set again, or closes without a word", "RDY-5", func() {
					r := run()
					r.mustServe()
					r.expectSameDescriptors(r.session(0))
					if err, closed := r.checks["closed"]; closed {
						Expect(closedByPeer(err)).To(BeTrue(), "the second HELLO was answered by neither a session nor a close: %v%s", err, r.transcript())
						return
					}
					r.expectSameDescriptors(r.session(1))
					Expect(r.result(0).reply.Outcome).To(Equal("ready"), "the connection's last session"+r.transcript())
				})
			})
		}

		// The busy window ends (RDY-4).
		e.describe("a receiver that acknowledges and never says READY, then another", func() {
			run := e.lazySender(senderScenario{fixtures: one, short: true, script: func(s *receiverScript) {
				p, l := s.open()
				if p == nil {
					return
				}
				defer p.close()
				p.send(ack(len(l.records)))
				s.result() // once the READY deadline passed
				s.goodSession()
				s.result()
			}})
			e.verify("serves the next receiver once the READY deadline has passed", "RDY-4", func() {
				r := run()
				r.mustServe()
				Expect(r.result(0).reply.Outcome).To(Equal("acked"), r.transcript())
				r.expectRecords(r.session(1))
				Expect(r.result(1).reply.Outcome).To(Equal("ready"), r.transcript())
			})
		})
		e.describe("a receiver whose session fails, then another", func() {
			run := e.lazySender(senderScenario{fixtures: one, timeout: e.patient(), script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				p.send(hello1())
				l := s.readSet(p)
				p.send(ack(len(l.records) + 7))
				s.result()
				p.close()
				s.goodSession()
				s.result()
			}})
			e.verify("serves the next receiver once the failed session is over", "RDY-4", func() {
				r := run()
				r.mustServe()
				Expect(r.result(0).reply.OK).To(BeFalse(), r.transcript())
				r.expectRecords(r.session(1))
			})
		})
	})

	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.describe("a set whose receiver is asked to say READY", func() {
			run := e.lazyReceiver(receiverScenario{fixtures: one, ready: true, script: (*senderScript).wholeSession})
			e.verify("sends READY after ACK", "RDY-1", func() {
				r := run()
				r.mustRun()
				r.expectAck(true)
			})
		})

		// The set is the user's once handed over (ACK-3).
		for _, c := range []struct {
			name  string
			close func(p *wirePeer) error
		}{
			{"a sender that stops reading before the set, so that ACK cannot be written", func(p *wirePeer) error { return p.c.CloseRead() }},
			{"a sender that closes right after END", nil},
		} {
			e.describe(c.name, func() {
				run := e.lazyReceiver(receiverScenario{fixtures: two, ready: true, script: func(s *senderScript) error {
					if c.close != nil {
						if err := c.close(s.p); err != nil {
							return err
						}
						return s.wholeSession()
					}
					// Stopped meanwhile, the implementation finds the whole
					// set and the connection closed at once: its ACK write
					// fails.
					resume, err := stop(s.run.a.holder, s.e.cfg.wait())
					if err != nil {
						return err
					}
					defer resume()
					if err := s.wholeSession(); err != nil {
						return err
					}
					return s.p.c.Close()
				}})
				e.verify("reports the set as delivered (confirmed or not), never as a failure, and hands it all over", "ACK-3", func() {
					r := run()
					r.mustRun()
					if !r.reply.OK {
						Expect(r.reply.code()).To(Equal("UNCONFIRMED"), "a set handed over whole reported as a failure"+r.transcript())
					}
					r.expectHandedOver()
					r.expectNoLeak()
				})
			})
		}

		// Several sessions on one connection (feature sessions).
		for _, ready := range []bool{true, false} {
			name := "two sessions on one connection, each ended with READY"
			if !ready {
				name = "two sessions on one connection, the second HELLO right after ACK"
			}
			e.describe(name, func() {
				run := e.lazyReceiver(receiverScenario{fixtures: two, ready: ready, needs: []string{"sessions"},
					request: map[string]any{"sessions": 2}, frames: 16,
					script: func(s *senderScript) error {
						if err := s.wholeSession(); err != nil {
							return err
						}
						// ACK, READY when asked, then the second HELLO.
						for {
							f, err := s.p.readFrame()
							if err != nil {
								return err
							}
							s.run.back = append(s.run.back, f)
							if f.Header.Type == wire.TypeHello || f.Header.Type == wire.TypeError {
								break
							}
						}
						return s.wholeSession()
					}})
				e.verify("begins each session with HELLO, acknowledges both and hands over both sets", "NEG-1 ACK-1", func() {
					r := run()
					r.mustRun()
					var types []wire.Type
					for _, f := range r.back {
						types = append(types, f.Header.Type)
					}
					want := []wire.Type{wire.TypeAck, wire.TypeHello, wire.TypeAck}
					if ready {
						want = []wire.Type{wire.TypeAck, wire.TypeReady, wire.TypeHello, wire.TypeAck, wire.TypeReady}
					}
					Expect(types).To(Equal(want), "frames after the first HELLO"+r.transcript())
					for _, f := range r.back {
						if f.Header.Type == wire.TypeAck {
							Expect(f.Payload).To(Equal(ack(len(r.set))[wire.HeaderSize:]), "ACK count"+r.transcript())
						}
					}
					Expect(r.reply.OK).To(BeTrue(), r.transcript())
					Expect(r.reply.Descriptors).To(HaveLen(2*len(r.set)), "descriptors of both sessions"+r.transcript())
				})
			})
		}
	})
}
