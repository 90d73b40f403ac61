package conformance

import (
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// badReceiver is a sender scenario in which the suite's receiver breaks a
// rule at the start of a session: the implementation must send no
// descriptor, answer ERROR with a fitting code (when the connection is
// still open), report the failure, and go on serving the next receiver.
type badReceiver struct {
	name       string
	ids        string
	codes      []wire.Code // nil when the suite closes and no ERROR is due
	send       func(p *wirePeer) error
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
		run := e.lazySender(senderScenario{fixtures: one, script: func(s *receiverScript) {
			s.refusedSession(b.send)
			s.result()
			s.goodSession()
			s.result()
		}})
		e.verify("sends no descriptor and reports that the hand-off failed", b.ids, func() {
			r := run()
			r.mustServe()
			l := r.session(0)
			for _, f := range l.frames {
				Expect(f.Header.Type).To(Equal(wire.TypeError), "the implementation went on with the session"+r.transcript())
			}
			Expect(l.received).To(BeZero(), "descriptors sent"+r.transcript())
			Expect(r.result(0).reply.OK).To(BeFalse(), "the implementation reported success"+r.transcript())
		})
		if b.codes != nil {
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
		e.verify("survives and serves the next receiver", "ERR-2", func() {
			r := run()
			r.mustServe()
			r.expectRecords(r.session(1))
			Expect(r.result(1).reply.OK).To(BeTrue(), "the next session failed"+r.transcript())
		})
	})...)
}

// headerOnly is a frame header with no payload.
func headerOnly(h wire.Header) []byte { return wire.AppendHeader(nil, h) }
