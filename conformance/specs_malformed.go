package conformance

import (
	"fmt"

	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// unknownCodes are error codes no revision defines, on both sides of the
// known ones.
var unknownCodes = []uint16{0, 10, 999, 65535}

// oddErrors are ERROR frames a peer must take as a failure and never
// answer (ERR-3): text that is not ASCII or not UTF-8, and frames that
// break a rule themselves.
var oddErrors = []struct {
	name  string
	frame []byte
}{
	{"an ERROR whose message is not ASCII", errorFrame(wire.CodeRejected, "refusé: ☃ 🙂 ü")},
	{"an ERROR whose message is not valid UTF-8", rawError(0, 0, uint16(wire.CodeRejected), 3, []byte{0xff, 0xfe, 0x80})},
	{"an ERROR whose message_length does not match its length", rawError(0, 0, uint16(wire.CodeRejected), 9, []byte("abc"))},
	{"an ERROR with a message of 1025 bytes", rawError(0, 0, uint16(wire.CodeRejected), 1025, make([]byte, 1025))},
	{"an ERROR with flags 1", rawError(1, 0, uint16(wire.CodeRejected), 2, []byte("no"))},
	{"an ERROR with nfds 1", rawError(0, 1, uint16(wire.CodeRejected), 2, []byte("no"))},
}

func malformedSpecs(e *env) {
	e.describe("the implementation as receiver", iut("receiver"), func() {
		for _, code := range unknownCodes {
			e.rejects(badSender{name: fmt.Sprintf("an ERROR with the unknown code %d after a BATCH", code), ids: "ERR-3", midSession: true, survives: true, quiet: true,
				fixtures: two,
				script: func(s *senderScript) error {
					// END follows: a receiver that passed over the ERROR would take the set.
					return s.p.send(frames(welcome(), batchOf(s.set), rawError(0, 0, code, 4, []byte("from the future"[:4])), endOf(2)), s.set.fds()...)
				}})
		}
		for _, odd := range oddErrors {
			e.rejects(badSender{name: odd.name + " after a BATCH", ids: "ERR-3", midSession: true, quiet: true, fixtures: two,
				script: func(s *senderScript) error {
					return s.p.send(frames(welcome(), batchOf(s.set), odd.frame, endOf(2)), s.set.fds()...)
				}})
		}
		e.rejects(badSender{name: "garbage, then a good set", ids: "ERR-1", codes: malformedOrTooLarge, survives: true,
			fixtures: one,
			script: func(s *senderScript) error {
				// A receiver that resynchronises finds the set after the garbage.
				return s.p.send(frames([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), welcome(), batchOf(s.set), endOf(1)), s.set.fds()...)
			}})
	})

	e.describe("the implementation as sender", iut("sender"), func() {
		failedQuietly := func(run func() *senderRun) {
			e.verify("reports that the hand-off failed and does not answer the ERROR", "ERR-3", func() {
				r := run()
				r.mustServe()
				r.expectWholeSet(r.session(0))
				Expect(r.result(0).reply.OK).To(BeFalse(), "the hand-off was reported as done"+r.transcript())
				r.expectAnswered(0)
			})
		}
		for _, code := range unknownCodes {
			e.answeredSet(fmt.Sprintf("an ERROR with the unknown code %d instead of ACK", code), func(int) []byte {
				return rawError(0, 0, code, 4, []byte("from"))
			}, false, true, failedQuietly)
		}
		for _, odd := range oddErrors {
			e.answeredSet(odd.name+" instead of ACK", func(int) []byte { return odd.frame }, false, true, failedQuietly)
		}
	})
}
