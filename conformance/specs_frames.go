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
		e.rejects(badSender{name: "a frame of unknown type 9 in the middle of a set", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), headerOnly(wire.Header{Type: 9}), batchOf(s.set), endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a second WELCOME", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), welcome(), batchOf(s.set), endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "an ACK from the sender, in the middle of a set", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), wire.AppendCount(nil, wire.TypeAck, 0), batchOf(s.set), endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a BATCH before WELCOME", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(batchOf(s.set), welcome(), endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "an END with nfds 1", ids: "FRM-3", codes: malformed, fixtures: one,
			script: func(s *senderScript) error {
				end := endOf(1)
				end[3] = 1
				return s.p.send(frames(welcome(), batchOf(s.set), end), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a frame header with length 1 MiB + 1 and no payload", ids: "FRM-4", codes: tooLarge, codeIsTheRule: true, patient: true, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), headerOnly(wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.MaxPayload + 1})), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a WELCOME of length 3", ids: "FRM-4", codes: malformed, codeIsTheRule: true, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(headerOnly(wire.Header{Type: wire.TypeWelcome, Length: 3}), []byte{0, 1, 0}), s.set.fds()...)
			}})

		// Headers that break two rules: the first in FRM-4's order decides.
		for _, h := range []struct {
			name string
			head []byte
			code wire.Code
		}{
			{"a WELCOME header with nfds 1 and length 2 MiB", headerOnly(wire.Header{Type: wire.TypeWelcome, NFds: 1, Length: 2 << 20}), wire.CodeMalformed},
			{"a WELCOME header with flags 1 and length 2 MiB", flagged(headerOnly(wire.Header{Type: wire.TypeWelcome, Length: 2 << 20})), wire.CodeMalformed},
			{"a header of unknown type 9 and length 2 MiB", headerOnly(wire.Header{Type: 9, Length: 2 << 20}), wire.CodeMalformed},
			{"an ACK header, where WELCOME is due, of length 2 MiB", headerOnly(wire.Header{Type: wire.TypeAck, Length: 2 << 20}), wire.CodeMalformed},
			{"a WELCOME header of length 2 MiB", headerOnly(wire.Header{Type: wire.TypeWelcome, Length: 2 << 20}), wire.CodeTooLarge},
		} {
			e.rejects(badSender{name: h.name, ids: "FRM-4", codes: []wire.Code{h.code}, codeIsTheRule: true, patient: true, fixtures: one,
				script: func(s *senderScript) error { return s.p.send(h.head) }})
		}
		e.rejects(badSender{name: "a BATCH header with nfds 0 and length 2 MiB, after WELCOME", ids: "FRM-4", codes: malformed, codeIsTheRule: true, patient: true, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), headerOnly(wire.Header{Type: wire.TypeBatch, Length: 2 << 20})))
			}})
		e.rejects(badSender{name: "a BATCH of 2 descriptors in 11 bytes", ids: "FRM-4", codes: malformed, codeIsTheRule: true, patient: true, fixtures: two,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), headerOnly(wire.Header{Type: wire.TypeBatch, NFds: 2, Length: 11})), s.set.fds()...)
			}})

		// The header decides before the payload is read (FRM-6).
		e.rejects(badSender{name: "a HELLO header of 1 MiB after WELCOME, its payload never sent", ids: "FRM-6", codes: malformed, codeIsTheRule: true, patient: true, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), headerOnly(wire.Header{Type: wire.TypeHello, Length: wire.MaxPayload})))
			}})
		e.rejects(badSender{name: "a WELCOME header of 1000 bytes, its payload never sent", ids: "FRM-6", codes: malformed, codeIsTheRule: true, patient: true, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(headerOnly(wire.Header{Type: wire.TypeWelcome, Length: 1000}))
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
		e.refuses(badReceiver{name: "a frame of unknown type 9 before HELLO", ids: "FRM-3", codes: malformed,
			send: func(p *wirePeer) error { return p.send(frames(headerOnly(wire.Header{Type: 9}), hello1())) }})
		e.refuses(badReceiver{name: "a READY before HELLO", ids: "FRM-3", codes: malformed,
			send: func(p *wirePeer) error { return p.send(frames(wire.AppendReady(nil), hello1())) }})
		e.refuses(badReceiver{name: "a HELLO with nfds 1 and a descriptor attached", ids: "FRM-3", codes: malformed,
			send: func(p *wirePeer) error {
				h := hello1()
				h[3] = 1
				return p.send(h, 0)
			}})
		e.refuses(badReceiver{name: "a frame header with length 1 MiB + 1 and no payload", ids: "FRM-4", codes: tooLarge, codeIsTheRule: true, patient: true,
			send: func(p *wirePeer) error {
				return p.send(headerOnly(wire.Header{Type: wire.TypeHello, Length: wire.MaxPayload + 1}))
			}})
		e.refuses(badReceiver{name: "a HELLO header of length 11, its payload never sent", ids: "FRM-4", codes: malformed, codeIsTheRule: true, patient: true,
			send: func(p *wirePeer) error {
				return p.send(headerOnly(wire.Header{Type: wire.TypeHello, Length: 11}))
			}})
		e.refuses(badReceiver{name: "a HELLO of length 13: a good HELLO payload and one byte more", ids: "FRM-4", codes: malformed, codeIsTheRule: true,
			send: func(p *wirePeer) error {
				return p.send(frames(headerOnly(wire.Header{Type: wire.TypeHello, Length: 13}), hello1()[wire.HeaderSize:], []byte{0}))
			}})

		// Headers that break two rules: the first in FRM-4's order decides.
		for _, h := range []struct {
			name string
			head []byte
			code wire.Code
		}{
			{"a HELLO header with nfds 1 and length 2 MiB", headerOnly(wire.Header{Type: wire.TypeHello, NFds: 1, Length: 2 << 20}), wire.CodeMalformed},
			{"a HELLO header with flags 1 and length 2 MiB", flagged(headerOnly(wire.Header{Type: wire.TypeHello, Length: 2 << 20})), wire.CodeMalformed},
			{"a header of unknown type 9 and length 2 MiB", headerOnly(wire.Header{Type: 9, Length: 2 << 20}), wire.CodeMalformed},
			{"a READY header, where HELLO is due, of length 2 MiB", headerOnly(wire.Header{Type: wire.TypeReady, Length: 2 << 20}), wire.CodeMalformed},
			{"a HELLO header of length 2 MiB", headerOnly(wire.Header{Type: wire.TypeHello, Length: 2 << 20}), wire.CodeTooLarge},
		} {
			e.refuses(badReceiver{name: h.name, ids: "FRM-4", codes: []wire.Code{h.code}, codeIsTheRule: true, patient: true,
				send: func(p *wirePeer) error { return p.send(h.head) }})
		}

		// The header decides before the payload is read (FRM-6).
		e.refuses(badReceiver{name: "a BATCH header of 1 MiB where HELLO is due, its payload never sent", ids: "FRM-6", codes: malformed, codeIsTheRule: true, patient: true,
			send: func(p *wirePeer) error {
				return p.send(headerOnly(wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.MaxPayload}))
			}})
		e.refuses(badReceiver{name: "a HELLO header of 65 536 bytes, its payload never sent", ids: "FRM-6", codes: malformed, codeIsTheRule: true, patient: true,
			send: func(p *wirePeer) error {
				return p.send(headerOnly(wire.Header{Type: wire.TypeHello, Length: 65536}))
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

// flagged sets a frame's flags to 1.
func flagged(frame []byte) []byte {
	frame[1] = 1
	return frame
}
