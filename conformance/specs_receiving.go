package conformance

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// badSender is a receiver scenario in which the suite's sender breaks a
// rule: the implementation must fail the session, answer ERROR with a
// fitting code (when the connection is still open), and leak nothing.
type badSender struct {
	name     string
	ids      string      // what the rejection itself checks
	codes    []wire.Code // fitting ERROR codes; nil when no ERROR can be sent
	fixtures func() (fixtureSet, error)
	prepare  func(r *receiverRun) error
	after    func(r *receiverRun) error
	script   func(s *senderScript) error
	timeout  time.Duration // overrides the deadline asked of the implementation
	// midSession: a valid BATCH went before the fault, so a receiver that
	// hands descriptors over early would show it (RCV-5).
	midSession bool
	// should: the rule broken is SHOULD-level; the scenario runs only in
	// strict mode and checks the rejection and the leak.
	should bool
	// survives: the scenario is also a check of ERR-2 (no crash, hang or
	// leak on hostile input).
	survives bool
	// codeIsTheRule: the requirement itself names the error code (TRN-5,
	// NEG-4), so the primary check verifies the ERROR frame.
	codeIsTheRule bool
	// quiet: the suite sent an ERROR, which is never answered with another
	// (ERR-3).
	quiet bool
	// patient asks the implementation for step deadlines longer than the
	// suite waits: what it must do at once cannot pass as a timeout.
	patient bool
	// reported, when set, are the codes the implementation may report to
	// its user (graded by the primary check: RCV-9).
	reported []string
	// leakIDs are the requirements the leak check names; "" means RCV-6.
	leakIDs string
	// deadline: the fault is a peer that stops: the implementation must
	// close without an ERROR (TRN-8).
	deadline bool
	// needs and request: adapter features the scenario uses.
	needs      []string
	request    map[string]any
	decorators []any
}

func codeNames(codes []wire.Code) string {
	var names []string
	for _, c := range codes {
		names = append(names, c.String())
	}
	return strings.Join(names, " or ")
}

// rejects registers the specs of one bad-sender scenario.
func (e *env) rejects(b badSender) {
	e.describe(b.name, append(b.decorators, func() {
		sc := receiverScenario{fixtures: b.fixtures, prepare: b.prepare, after: b.after, script: b.script, timeout: b.timeout,
			needs: b.needs, request: b.request, short: b.deadline}
		if b.patient {
			sc.timeout = e.patient()
		}
		run := e.lazyReceiver(sc)
		if b.should {
			BeforeEach(func() {
				if !e.cfg.Strict {
					Skip(skipNotStrict + "SHOULD-level scenario: runs with --strict")
				}
			})
		}
		e.verify("fails the session and acknowledges nothing", b.ids, func() {
			r := run()
			r.mustRun()
			r.expectFailed()
			if (b.should || b.codeIsTheRule) && b.codes != nil {
				r.expectErrorFrame(b.codes...)
			}
			if b.reported != nil {
				r.expectReported(b.reported...)
			}
			if b.deadline {
				Expect(r.errorCodes()).To(BeEmpty(), "an ERROR frame for a deadline"+r.transcript())
			}
		})
		if b.codes != nil && !b.should && !b.codeIsTheRule {
			e.verify("answers ERROR "+codeNames(b.codes)+" and closes the connection", "ERR-1", func() {
				r := run()
				r.mustRun()
				r.expectErrorFrame(b.codes...)
			})
		}
		leakIDs := b.leakIDs
		if leakIDs == "" {
			leakIDs = "RCV-6"
		}
		e.verify("closes every descriptor of the session", leakIDs, func() {
			r := run()
			r.mustRun()
			r.expectNoLeak()
		})
		if b.quiet {
			e.verify("does not answer the ERROR with an ERROR", "ERR-3", func() {
				r := run()
				r.mustRun()
				Expect(r.errorCodes()).To(BeEmpty(), "an ERROR answered with ERROR"+r.transcript())
			})
		}
		if b.survives {
			e.verify("fails cleanly: no crash, no hang, no leak", "ERR-2", func() {
				r := run()
				r.mustRun()
				r.expectFailed()
				r.expectNoLeak()
			})
		}
		if b.midSession {
			e.verify("hands its user no descriptor of the failed session", "RCV-5", func() {
				r := run()
				r.mustRun()
				r.expectNothingDelivered()
			})
		}
	})...)
}

// goodSet registers the specs of a scenario in which the suite sends set
// correctly: every descriptor arrives, identical, with its metadata.
func (e *env) delivers(name, ids string, sc receiverScenario, decorators ...any) {
	e.describe(name, append(decorators, func() {
		sc.challenge = true
		run := e.lazyReceiver(sc)
		e.verify("hands over the very descriptors sent, in record order, each usable", ids, func() {
			r := run()
			r.mustRun()
			r.expectSameDescriptors()
		})
		// A failed session is the primary check's failure; these judge
		// only a session that went through.
		e.verify("hands each over with its metadata", "RCV-7", func() {
			r := run()
			r.mustRun()
			r.skipUnlessDelivered()
			r.expectMeta()
		})
		e.verify("acknowledges the set with ACK and its count", "ACK-1", func() {
			r := run()
			r.mustRun()
			r.skipUnlessDelivered()
			r.expectAck(sc.ready)
		})
		e.verify("leaks nothing", "RCV-6", func() {
			r := run()
			r.mustRun()
			r.expectNoLeak()
		})
	})...)
}

func one() (fixtureSet, error) { return fileSet(1) }
func two() (fixtureSet, error) { return fileSet(2) }

// frames concatenates frames.
func frames(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func receivingSpecs(e *env) {
	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.delivers("a set of one descriptor of each kind", "RCV-1", receiverScenario{fixtures: mixedSet, script: (*senderScript).wholeSession})

		e.delivers("a set of 600 descriptors in three BATCH frames", "RCV-1", receiverScenario{
			fixtures: func() (fixtureSet, error) { return fileSet(600) },
			script:   (*senderScript).wholeSession,
		}, Label(LabelSlow))

		e.delivers("two BATCH frames in one sendmsg, their descriptors in one control message on its first byte", "RCV-1", receiverScenario{
			fixtures: mixedSet,
			script: func(s *senderScript) error {
				data := frames(welcome(), batchOf(s.set[:2]), batchOf(s.set[2:]), endOf(len(s.set)))
				return s.p.send(data, s.set.fds()...)
			},
		})

		e.delivers("a BATCH whose descriptors came with bytes of the frame before it", "RCV-1", receiverScenario{
			fixtures: mixedSet,
			script: func(s *senderScript) error {
				first, second := batchOf(s.set[:2]), batchOf(s.set[2:])
				// The second batch's descriptors ride on the last byte of
				// the first batch, in the same sendmsg as the rest.
				if err := s.p.send(frames(welcome(), first[:len(first)-1]), s.set[:2].fds()...); err != nil {
					return err
				}
				return s.p.send(frames(first[len(first)-1:], second, endOf(len(s.set))), s.set[2:].fds()...)
			},
		})

		e.delivers("the same descriptor twice in one BATCH", "RCV-1", receiverScenario{fixtures: twice, script: (*senderScript).wholeSession})
		e.delivers("a BATCH of 252 descriptors", "RCV-2", receiverScenario{
			fixtures: func() (fixtureSet, error) { return fileSet(252) }, script: (*senderScript).wholeSession}, Label(LabelSlow))
		e.delivers("a record with exactly 65 536 bytes of metadata", "RCV-2", receiverScenario{
			fixtures: metaSet(wire.MaxMetaSize), script: (*senderScript).wholeSession})
		e.delivers("a BATCH whose payload is exactly 1 MiB", "RCV-2 FRM-4", receiverScenario{
			fixtures: metaSet(exactlyOneMiB...), script: func(s *senderScript) error {
				b := batchOf(s.set)
				if len(b) != wire.HeaderSize+wire.MaxPayload {
					return fmt.Errorf("the suite built a BATCH of %d bytes", len(b)-wire.HeaderSize)
				}
				return s.p.send(frames(welcome(), b, endOf(len(s.set))), s.set.fds()...)
			}})
		e.delivers("252 descriptors that arrive with WELCOME, ahead of their BATCH", "RCV-3", receiverScenario{
			fixtures: func() (fixtureSet, error) { return fileSet(252) },
			script: func(s *senderScript) error {
				if err := s.p.send(welcome(), s.set.fds()...); err != nil {
					return err
				}
				return s.p.send(frames(batchOf(s.set), endOf(len(s.set))))
			}}, Label(LabelSlow))

		e.rejects(badSender{name: "a BATCH with fewer descriptors than its nfds", ids: "RCV-2", codes: malformed,
			fixtures: two,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), batchOf(s.set), endOf(2)), s.set[0].fd)
			}})
		e.rejects(badSender{name: "a BATCH with nfds 0", ids: "RCV-2", codes: malformed, codeIsTheRule: true,
			fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch}), endOf(0)))
			}})
		e.rejects(badSender{name: "a BATCH header declaring 253 descriptors", ids: "RCV-2", codes: malformed, codeIsTheRule: true, patient: true,
			fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 253, Length: 253 * 6})), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a record with meta_length over 65 536", ids: "RCV-2", codes: malformedOrTooLarge,
			fixtures: one,
			script: func(s *senderScript) error {
				rec := wire.Record{Kind: wire.KindFile, HasMeta: true, Meta: make([]byte, wire.MaxMetaSize+1)}
				return s.p.send(frames(welcome(), wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: uint32(wire.BatchLength([]wire.Record{rec}))}), wire.AppendRecord(nil, rec), endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a record with HAS_META clear and meta_length 3", ids: "RCV-2", codes: malformed,
			fixtures: one,
			script: func(s *senderScript) error {
				payload := []byte{byte(wire.KindFile), 0, 0, 0, 0, 3, 'a', 'b', 'c'}
				return s.p.send(frames(welcome(), wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: 9}), payload, endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a record of unknown kind 5", ids: "RCV-2", codes: malformed,
			fixtures: one,
			script: func(s *senderScript) error {
				payload := []byte{5, 0, 0, 0, 0, 0}
				return s.p.send(frames(welcome(), wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: 6}), payload, endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a record with unknown rflags bits", ids: "RCV-2", codes: malformed,
			fixtures: one,
			script: func(s *senderScript) error {
				payload := []byte{byte(wire.KindFile), 2, 0, 0, 0, 0}
				return s.p.send(frames(welcome(), wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: 6}), payload, endOf(1)), s.set.fds()...)
			}})
		e.rejects(badSender{name: "records that leave a byte of the payload unfilled", ids: "RCV-2", codes: malformed,
			fixtures: one,
			script: func(s *senderScript) error {
				payload := []byte{byte(wire.KindFile), 0, 0, 0, 0, 0, 0}
				return s.p.send(frames(welcome(), wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: 7}), payload, endOf(1)), s.set.fds()...)
			}})

		e.rejects(badSender{name: "253 descriptors attached to WELCOME", ids: "RCV-3", codes: malformedOrTruncated, codeIsTheRule: true, patient: true,
			fixtures: func() (fixtureSet, error) { return fileSet(1) },
			script: func(s *senderScript) error {
				fds := make([]int, 253)
				for i := range fds {
					fds[i] = s.set[0].fd
				}
				return s.p.send(welcome(), fds...)
			}})
		e.rejects(badSender{name: "400 descriptors in two messages before any BATCH completes", ids: "RCV-3", codes: malformed, codeIsTheRule: true, patient: true,
			fixtures: func() (fixtureSet, error) { return fileSet(1) },
			script: func(s *senderScript) error {
				fds := make([]int, 200)
				for i := range fds {
					fds[i] = s.set[0].fd
				}
				head := wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 200, Length: 1200})
				if err := s.p.send(frames(welcome(), head[:4]), fds...); err != nil {
					return err
				}
				return s.p.send(head[4:6], fds...)
			}})

		e.rejects(badSender{name: "an END whose count differs from the descriptors sent", ids: "RCV-4", codes: malformed, midSession: true,
			fixtures: two,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), batchOf(s.set), endOf(3)), s.set.fds()...)
			}})
		for _, count := range []int{1, 0} {
			e.rejects(badSender{name: fmt.Sprintf("an END counting %d of the 2 descriptors sent", count), ids: "RCV-4", codes: malformed, midSession: true,
				codeIsTheRule: true, fixtures: two,
				script: func(s *senderScript) error {
					return s.p.send(frames(welcome(), batchOf(s.set), endOf(count)), s.set.fds()...)
				}})
		}
		e.rejects(badSender{name: "a descriptor left in the queue when END completes", ids: "RCV-4", codes: malformed, midSession: true,
			fixtures: two,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), batchOf(s.set[:1]), endOf(1)), s.set.fds()...)
			}})

		e.rejects(badSender{name: "an ERROR SENDER_FAILED after a BATCH", ids: "RCV-9", midSession: true, quiet: true,
			reported: []string{"SENDER_FAILED"}, fixtures: two,
			script: func(s *senderScript) error {
				return s.p.send(frames(welcome(), batchOf(s.set), wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeSenderFailed, Message: "lost one"})), s.set.fds()...)
			}})

		e.rejects(badSender{name: "an ERROR UNSUPPORTED_VERSION instead of WELCOME", ids: "RCV-9", quiet: true,
			reported: []string{"UNSUPPORTED_VERSION"}, fixtures: one,
			script: func(s *senderScript) error {
				return s.p.send(errorFrame(wire.CodeUnsupportedVersion, "this sender speaks 2 only"))
			}})

		e.describe("a set whose user refuses its second descriptor", func() {
			reject := 1
			run := e.lazyReceiver(receiverScenario{fixtures: func() (fixtureSet, error) { return fileSet(4) }, reject: &reject,
				script: (*senderScript).wholeSession})
			e.verify("answers ERROR REJECTED instead of ACK", "ACK-1", func() {
				r := run()
				r.mustRun()
				r.expectFailed()
				Expect(r.errorCodes()).To(Equal([]wire.Code{wire.CodeRejected}), "one ERROR REJECTED"+r.transcript())
			})
			e.verify("closes every descriptor its user did not take", "RCV-6", func() {
				r := run()
				r.mustRun()
				Expect(len(r.reply.Descriptors)).To(BeNumerically("<=", 2), "the user took at most the first two"+r.transcript())
				r.expectNoLeak()
			})
		})

		for _, k := range []struct {
			name  string
			make  func() (*fixture, error)
			claim wire.Kind
		}{
			{"a file sent as a LISTENER", newFile, wire.KindListener},
			{"a TCP listener sent as a FILE", newTCPListener, wire.KindFile},
			{"a UDP socket sent as a STREAM", newUDP, wire.KindStream},
		} {
			e.rejects(badSender{name: k.name, ids: "RCV-8", codes: malformed, should: true,
				fixtures: func() (fixtureSet, error) {
					f, err := k.make()
					if err != nil {
						return nil, err
					}
					f.kind = k.claim
					return fixtureSet{f}, nil
				},
				script: (*senderScript).wholeSession})
		}
	})
}

var (
	malformed            = []wire.Code{wire.CodeMalformed}
	malformedOrTooLarge  = []wire.Code{wire.CodeMalformed, wire.CodeTooLarge}
	tooLarge             = []wire.Code{wire.CodeTooLarge}
	malformedOrTruncated = []wire.Code{wire.CodeMalformed, wire.CodeTruncated}
)

// twice is one file sent as two records: the same descriptor twice.
func twice() (fixtureSet, error) {
	s, err := fileSet(1)
	if err != nil {
		return nil, err
	}
	again := *s[0]
	again.closers = nil // closed once, by the first
	again.withMeta([]byte("again"))
	return append(s, &again), nil
}

// exactlyOneMiB are the metadata sizes of 16 records whose BATCH payload
// is exactly 1 MiB.
var exactlyOneMiB = append(repeat(wire.MaxMetaSize, 15), wire.MaxPayload-15*(wire.RecordOverhead+wire.MaxMetaSize)-wire.RecordOverhead)
