package conformance

import (
	"fmt"

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
		for _, v := range []uint16{0, 2, 65535} {
			e.rejects(badSender{name: fmt.Sprintf("a WELCOME naming version %d", v), ids: "NEG-4", codeIsTheRule: true,
				codes: []wire.Code{wire.CodeUnsupportedVersion}, fixtures: one,
				script: func(s *senderScript) error {
					return s.p.send(frames(wire.AppendWelcome(nil, v), batchOf(s.set), endOf(1)), s.set.fds()...)
				}})
		}
	})

	e.describe("the implementation as sender", iut("sender"), func() {
		for _, magic := range []string{"GRACELESS", "graceful", "GRACEFUM"} {
			e.refuses(badReceiver{name: "a HELLO with the magic " + magic, ids: "NEG-2", codes: malformed, codeIsTheRule: true,
				send: func(p *wirePeer) error {
					h := hello1()
					copy(h[8:16], magic)
					return p.send(h)
				}})
		}
		for _, vr := range [][2]uint16{{2, 5}, {3, 1}, {0, 0}, {1, 0}, {2, 2}, {65535, 65535}} {
			e.refuses(badReceiver{name: "a HELLO for versions " + versions(vr), ids: "NEG-3",
				codes: []wire.Code{wire.CodeUnsupportedVersion}, codeIsTheRule: true,
				send: func(p *wirePeer) error {
					return p.send(wire.AppendHello(nil, wire.Hello{MinVersion: vr[0], MaxVersion: vr[1]}))
				}})
		}

		// The order of refusals (NEG-6).
		badBoth := func(p *wirePeer) error {
			h := wire.AppendHello(nil, wire.Hello{MinVersion: 2, MaxVersion: 5})
			copy(h[8:16], "GRACELESS")
			return p.send(h)
		}
		e.refuses(badReceiver{name: "a HELLO with the wrong magic and no common version", ids: "NEG-6", codes: malformed, codeIsTheRule: true, send: badBoth})
		e.refuses(badReceiver{name: "a HELLO with the wrong magic and no common version, while another session runs", ids: "NEG-6", codes: malformed,
			codeIsTheRule: true, busy: true, patient: true, send: badBoth})
		e.refuses(badReceiver{name: "a HELLO with no common version, while another session runs", ids: "NEG-6",
			codes: []wire.Code{wire.CodeUnsupportedVersion}, codeIsTheRule: true, busy: true, patient: true,
			send: func(p *wirePeer) error {
				return p.send(wire.AppendHello(nil, wire.Hello{MinVersion: 2, MaxVersion: 5}))
			}})
		e.refuses(badReceiver{name: "a HELLO with flags 1, while another session runs", ids: "NEG-6", codes: malformed, codeIsTheRule: true, busy: true, patient: true,
			send: func(p *wirePeer) error { return p.send(flagged(hello1())) }})

		for _, vr := range [][2]uint16{{1, 7}, {0, 1}, {0, 65535}, {1, 1}} {
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

func versions(vr [2]uint16) string { return fmt.Sprintf("%d..%d", vr[0], vr[1]) }
