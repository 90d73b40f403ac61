package conformance

import (
	"strconv"

	"github.com/gracefulfd/graceful/graceful/wire"
)

func frameSpecs(e *env) {
	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.rejects(badSender{name: "a WELCOME with flags 1", ids: "FRM-2", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				w := welcome()
				w[1] = 1
				return s.p.send(frames(w, batchOf(s.set), endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a BATCH with flags 1", ids: "FRM-2", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				b := batchOf(s.set)
				b[1] = 1
				return s.p.send(frames(welcome(), b, endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a frame of unknown type 9", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), headerOnly(wire.Header{Type: 9})), s.set.fds()...)
			}})
		e.rejects(badSender{name: "an ACK from the sender", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), wire.AppendCount(nil, wire.TypeAck, 0)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a BATCH before WELCOME", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(batchOf(s.set), welcome(), endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "an END with nfds 1 and a descriptor attached", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				end := endOf(0)
				end[3] = 1
				return s.p.send(frames(welcome(), end), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a frame header with length 1 MiB + 1 and no payload", ids: "FRM-4", codes: tooLarge, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), headerOnly(wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.MaxPayload + 1})), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a WELCOME of length 3", ids: "FRM-4", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(headerOnly(wire.Header{Type: wire.TypeWelcome, Length: 3}), []byte{0, 1, 0}), s.set.fds()...)
			}})

		eof := func(name string, mid bool, cut func(set fixtureSet) (data []byte, withFds bool)) {
			e.rejects(badSender{name: "end of stream " + name, ids: "FRM-5", fixtures: two, midSession: mid, survives: true,
				script: func(s *senderScript) error {
					data, withFds := cut(s.set)
					var err error
					if withFds {
						err = s.p.send(data, s.set.fds()...)
					} else {
						err = s.p.send(data)
					}
					if err != nil {
						return err
					}
					return s.p.closeWrite()
				}})
		}
		eof("inside the WELCOME header", false, func(fixtureSet) ([]byte, bool) { return welcome()[:3], false })
		eof("inside the WELCOME payload", false, func(fixtureSet) ([]byte, bool) { return welcome()[:9], false })
		eof("after the first byte of a BATCH that carries descriptors", false, func(set fixtureSet) ([]byte, bool) {
			return frames(welcome(), batchOf(set)[:1]), true
		})
		eof("inside a BATCH payload", false, func(set fixtureSet) ([]byte, bool) {
			b := batchOf(set)
			return frames(welcome(), b[:len(b)-3]), true
		})
		eof("between the last BATCH and END", true, func(set fixtureSet) ([]byte, bool) {
			return frames(welcome(), batchOf(set)), true
		})
		eof("inside END", true, func(set fixtureSet) ([]byte, bool) {
			return frames(welcome(), batchOf(set), endOf(2)[:10]), true
		})
	})

	e.describe("the implementation as sender", iut("sender"), func() {
		e.refuses(badReceiver{name: "a HELLO with flags 1", ids: "FRM-2", codes: malformed,
			send: func(p *wirePeer) error {
				h := hello1()
				h[1] = 1
				return p.send(h)
			}})
		e.refuses(badReceiver{name: "a frame of unknown type 9 instead of HELLO", ids: "FRM-3", codes: malformed,
			send: func(p *wirePeer) error { return p.send(headerOnly(wire.Header{Type: 9})) }})
		e.refuses(badReceiver{name: "a READY instead of HELLO", ids: "FRM-3", codes: malformed,
			send: func(p *wirePeer) error { return p.send(wire.AppendReady(nil)) }})
		e.refuses(badReceiver{name: "a HELLO with nfds 1 and a descriptor attached", ids: "FRM-3", codes: malformed,
			send: func(p *wirePeer) error {
				h := hello1()
				h[3] = 1
				return p.send(h, 0)
			}})
		e.refuses(badReceiver{name: "a frame header with length 1 MiB + 1 and no payload", ids: "FRM-4", codes: tooLarge,
			send: func(p *wirePeer) error {
				return p.send(headerOnly(wire.Header{Type: wire.TypeHello, Length: wire.MaxPayload + 1}))
			}})
		e.refuses(badReceiver{name: "a HELLO of length 11", ids: "FRM-4", codes: malformed,
			send: func(p *wirePeer) error {
				return p.send(frames(headerOnly(wire.Header{Type: wire.TypeHello, Length: 11}), []byte(wire.Magic), []byte{0, 1, 0}))
			}})
		for _, cut := range []int{1, 5, 8, 13} {
			e.refuses(badReceiver{name: "end of stream after " + strconv.Itoa(cut) + " bytes of HELLO", ids: "FRM-5",
				send: func(p *wirePeer) error {
					if err := p.send(hello1()[:cut]); err != nil {
						return err
					}
					return p.closeWrite()
				}})
		}
	})
}
