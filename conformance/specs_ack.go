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
func (e *env) answeredSet(name string, reply func(count int) []byte, closeAfter, readAfter bool, checks func(run func() *senderRun), decorators ...any) {
	e.describe(name, append(decorators, func() {
		run := e.lazySender(senderScenario{fixtures: two, script: func(s *receiverScript) {
			p, err := s.dial()
			if err != nil {
				return
			}
			defer p.close()
			p.send(hello1())
			l := s.readSet(p)
			if b := reply(len(l.records)); b != nil {
				if err := p.send(b); err != nil {
					s.note("reply: %v", err)
				}
			}
			if closeAfter {
				p.closeWrite()
			}
			s.result()
			if readAfter {
				after := &sessionLog{welcome: -1, endCount: -1}
				after.frames, after.end = readAll(p)
				s.run.sessions = append(s.run.sessions, after)
			}
		}})
		checks(run)
	})...)
}

func ackSpecs(e *env) {
	e.describe("the implementation as sender", iut("sender"), func() {
		ack := func(n int) []byte { return wire.AppendCount(nil, wire.TypeAck, uint32(n)) }
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
		e.answeredSet("an ACK with the wrong count", func(n int) []byte { return ack(n + 1) }, false, false, failed("ACK-2"))
		e.answeredSet("an ERROR REJECTED instead of ACK", func(int) []byte {
			return wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeRejected, Message: "no"})
		}, false, false, failed("ACK-2"))
		e.answeredSet("the connection closed before ACK", func(int) []byte { return nil }, true, false, failed("ACK-2"))
		e.answeredSet("an ERROR with the unknown code 999 instead of ACK", func(int) []byte {
			return wire.AppendError(nil, wire.ErrorFrame{Code: 999, Message: "from the future"})
		}, false, true, func(run func() *senderRun) {
			failed("ERR-3")(run)
			e.verify("does not answer the ERROR with an ERROR", "ERR-3", func() {
				r := run()
				r.mustServe()
				for _, f := range r.session(1).frames {
					Expect(f.Header.Type).NotTo(Equal(wire.TypeError), "an ERROR answered with ERROR"+r.transcript())
				}
			})
		})

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
				Expect(r.result(0).reply.Outcome).NotTo(Equal("ready"), r.transcript())
			})
		}, Label(LabelSlow))
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
	})
}
