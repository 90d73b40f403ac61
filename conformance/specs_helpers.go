package conformance

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// badReceiver is a sender scenario in which the suite's receiver breaks a
// rule at the start of a session: the implementation must send no
// descriptor, answer ERROR with a fitting code (when the connection is
// still open), report the failure, and go on serving the next receiver.
type badReceiver struct {
	name  string
	ids   string
	codes []wire.Code // nil when the suite closes and no ERROR is due
	send  func(p *wirePeer) error
	// codeIsTheRule: the requirement names the code (NEG-3, NEG-6, ...),
	// so its own check verifies the ERROR frame: one frame, that code,
	// then the close.
	codeIsTheRule bool
	// patient asks the implementation for step deadlines longer than the
	// suite waits: what it must do at once cannot pass as a timeout.
	patient bool
	// busy: the suite holds a session (read the set, no ACK yet) while
	// it plays this receiver.
	busy       bool
	decorators []any
}

// refusedSession is the record of a connection the implementation should
// refuse: every frame it wrote, and how the stream ended.
func (s *receiverScript) refusedSession(send func(p *wirePeer) error) *sessionLog {
	l := &sessionLog{welcome: -1, endCount: -1}
	s.run.sessions = append(s.run.sessions, l)
	p, err := s.dial()
	if err != nil {
		l.end = err
		return l
	}
	defer p.close()
	if err := send(p); err != nil {
		s.note("sending: %v", err)
	}
	l.frames, l.end = readAll(p)
	l.viol, l.received = p.viol, len(p.received)
	for _, f := range l.frames {
		if f.Header.Type == wire.TypeError {
			if ef, err := wire.ParseError(f.Payload); err == nil {
				l.errFrame = &ef
			}
		}
	}
	return l
}

func (e *env) refuses(b badReceiver) {
	e.describe(b.name, append(b.decorators, func() {
		sc := senderScenario{fixtures: one, script: func(s *receiverScript) {
			var holder *wirePeer
			var held *sessionLog
			if b.busy {
				var err error
				if holder, err = s.dial(); err != nil {
					return
				}
				defer holder.close()
				holder.send(hello1())
				held = s.readSet(holder)
				s.run.sessions = s.run.sessions[:len(s.run.sessions)-1]
			}
			s.refusedSession(b.send)
			s.result()
			if holder != nil {
				s.finishSession(holder, held, wire.AppendCount(nil, wire.TypeAck, uint32(len(held.records))), true)
				s.result()
			}
			s.goodSession()
			s.result()
		}}
		if b.patient {
			sc.timeout = e.patient()
		}
		run := e.lazySender(sc)
		next := 1
		if b.busy {
			next = 2
		}
		e.verify("sends no descriptor and reports that the hand-off failed", b.ids, func() {
			r := run()
			r.mustServe()
			l := r.session(0)
			for _, f := range l.frames {
				Expect(f.Header.Type).To(Equal(wire.TypeError), "the implementation went on with the session"+r.transcript())
			}
			Expect(l.received).To(BeZero(), "descriptors sent"+r.transcript())
			Expect(r.result(0).reply.OK).To(BeFalse(), "the implementation reported success"+r.transcript())
			if b.codeIsTheRule {
				r.expectRefusal(l, b.codes...)
			}
		})
		if b.codes != nil && !b.codeIsTheRule {
			e.verify("answers ERROR "+codeNames(b.codes)+" and closes the connection", "ERR-1", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				Expect(l.frames).To(HaveLen(1), "one frame, ERROR"+r.transcript())
				Expect(l.errFrame).NotTo(BeNil(), "ERROR frame"+r.transcript())
				Expect(l.errFrame.Code).To(BeElementOf(b.codes), "ERROR code"+r.transcript())
				Expect(l.end).NotTo(HaveOccurred(), "the connection must be closed after ERROR"+r.transcript())
			})
		}
		e.verify("survives, serves the next receiver, and holds nothing of the refused one", "ERR-2", func() {
			r := run()
			r.mustServe()
			r.expectRecords(r.session(1))
			Expect(r.result(next).reply.OK).To(BeTrue(), "the next session failed"+r.transcript())
			r.expectTableBack()
		})
	})...)
}

// expectRefusal checks a refusal on the wire: one ERROR frame with one of
// codes, nothing before it, then the connection closed.
func (r *senderRun) expectRefusal(l *sessionLog, codes ...wire.Code) {
	GinkgoHelper()
	Expect(l.frames).To(HaveLen(1), "one frame, ERROR, and nothing before it"+r.transcript())
	Expect(l.errFrame).NotTo(BeNil(), "an ERROR frame"+r.transcript())
	Expect(l.errFrame.Code).To(BeElementOf(codes), "ERROR code"+r.transcript())
	Expect(l.end).NotTo(HaveOccurred(), "the connection must be closed after ERROR"+r.transcript())
}

// patient is a per-step deadline the suite asks for when the
// implementation must act without waiting for one: longer than the suite
// waits, so that a timeout can never pass for the right answer.
func (e *env) patient() time.Duration { return 4 * e.cfg.wait() }

// headerOnly is a frame header with no payload.
func headerOnly(h wire.Header) []byte { return wire.AppendHeader(nil, h) }
