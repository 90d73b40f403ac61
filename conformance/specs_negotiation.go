package conformance

import (
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

func negotiationSpecs(e *env) {
	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.describe("the start of a session", func() {
			run := e.lazyReceiver(receiverScenario{fixtures: one, script: (*senderScript).wholeSession})
			e.verify("is a HELLO with the magic and a version range holding 1, byte for byte", "NEG-1 NEG-5 FRM-1", func() {
				r := run()
				r.mustRun()
				r.expectHello()
			})
		})
		for _, v := range []uint16{0, 2} {
			e.rejects(badSender{name: "a WELCOME naming version " + string(rune('0'+v)), ids: "NEG-4", codeIsTheRule: true,
				codes: []wire.Code{wire.CodeUnsupportedVersion}, fixtures: one,
				script: func(s *senderScript) error {
					return s.p.send(frames(wire.AppendWelcome(nil, v), batchOf(s.set), endOf(1)), s.set.fds()...)
				}})
		}
	})

	e.describe("the implementation as sender", iut("sender"), func() {
		e.refuses(badReceiver{name: "a HELLO with the wrong magic", ids: "NEG-2", codes: malformed,
			send: func(p *wirePeer) error {
				h := hello1()
				copy(h[8:], "GRACELESS")
				return p.send(h)
			}})
		for _, vr := range [][2]uint16{{2, 5}, {3, 1}, {0, 0}} {
			e.refuses(badReceiver{name: "a HELLO for versions " + versions(vr), ids: "NEG-3",
				codes: []wire.Code{wire.CodeUnsupportedVersion},
				send: func(p *wirePeer) error {
					return p.send(wire.AppendHello(nil, wire.Hello{MinVersion: vr[0], MaxVersion: vr[1]}))
				}})
		}
		for _, vr := range [][2]uint16{{1, 7}, {0, 1}} {
			e.describe("a HELLO for versions "+versions(vr), func() {
				run := e.lazySender(senderScenario{fixtures: one, script: func(s *receiverScript) {
					p, err := s.dial()
					if err != nil {
						return
					}
					defer p.close()
					p.send(wire.AppendHello(nil, wire.Hello{MinVersion: vr[0], MaxVersion: vr[1]}))
					l := s.readSet(p)
					s.finishSession(p, l, wire.AppendCount(nil, wire.TypeAck, uint32(len(l.records))), true)
					s.result()
				}})
				e.verify("is answered with WELCOME 1 and the set", "NEG-3 NEG-5", func() {
					r := run()
					r.mustServe()
					r.expectWholeSet(r.session(0))
					Expect(r.result(0).reply.OK).To(BeTrue(), "the session failed"+r.transcript())
				})
			})
		}
	})
}

func versions(vr [2]uint16) string {
	return string(rune('0'+vr[0])) + ".." + string(rune('0'+vr[1]))
}
