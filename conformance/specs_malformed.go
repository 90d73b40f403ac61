package conformance

import (
	"github.com/gracefulfd/graceful/graceful/wire"
)

func malformedSpecs(e *env) {
	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.rejects(badSender{name: "an ERROR with the unknown code 999 after a BATCH", ids: "ERR-3", midSession: true, survives: true, quiet: true,
			fixtures: two,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), batchOf(s.set), wire.AppendError(nil, wire.ErrorFrame{Code: 999, Message: "from the future"})), s.set.fds()...)
			}})
		e.rejects(badSender{name: "garbage instead of WELCOME", ids: "ERR-1", codes: malformedOrTooLarge, survives: true,
			fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), s.set.fds()...)
			}})
	})
}
