package conformance

import (
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/harness"
)

// A trickling peer sends a byte every trickleInterval to an
// implementation asked for a trickleDeadline: every read returns in time,
// and the frame takes several deadlines.
const (
	trickleDeadline = time.Second
	trickleInterval = 100 * time.Millisecond
)

func transportSpecs(e *env) {
	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.delivers("a set written one byte per sendmsg", "TRN-1 TRN-2", receiverScenario{
			fixtures: mixedSet,
			script: func(s *senderScript) error {
				w := welcome()
				return s.p.trickle(frames(w, batchOf(s.set), endOf(len(s.set))), len(w), time.Millisecond, s.set.fds()...)
			},
		})

		e.describe("a set received as usual", func() {
			run := e.lazyReceiver(receiverScenario{fixtures: mixedSet, script: (*senderScript).wholeSession})
			e.verify("gets every descriptor close-on-exec", "TRN-4", func() {
				r := run()
				r.mustRun()
				r.expectCloExec()
			})
		})

		e.delivers("a set read with SO_PASSCRED on, so SCM_CREDENTIALS comes before SCM_RIGHTS", "TRN-6", receiverScenario{
			fixtures: func() (fixtureSet, error) { return fileSet(3) },
			prepare:  func(r *receiverRun) error { return setSockOpts(r.a.holder, r.path, unix.SO_PASSCRED) },
			script:   (*senderScript).wholeSession,
		})

		e.describe("a set read with SO_PASSPIDFD on, so an SCM_PIDFD message carries a descriptor too", func() {
			run := e.lazyReceiver(receiverScenario{
				fixtures: func() (fixtureSet, error) { return fileSet(3) },
				prepare: func(r *receiverRun) error {
					id, err := selfPidfd()
					if err != nil {
						return err
					}
					r.foreign = map[harness.FileID]bool{id: true}
					err = setSockOpts(r.a.holder, r.path, unix.SO_PASSCRED, soPassPidfd)
					if errors.Is(err, errNoOption) {
						r.noOption = err
						return nil
					}
					return err
				},
				script: (*senderScript).wholeSession,
			})
			e.verify("hands over the set and closes the descriptor SCM_PIDFD carried", "TRN-6", func() {
				r := run()
				r.mustRun()
				if r.noOption != nil {
					skipFor("%v", r.noOption)
				}
				r.expectSameDescriptors()
				Expect(r.stray).To(BeEmpty(), "the pidfd of an SCM_PIDFD message is still open"+r.transcript())
			})
		})

		e.rejects(func() badSender {
			var restore func() error
			return badSender{name: "descriptors beyond the receiver's open-file limit (MSG_CTRUNC)", ids: "TRN-5", codeIsTheRule: true, leakIDs: "RCV-6 TRN-5",
				codes:    []wire.Code{wire.CodeTruncated},
				fixtures: func() (fixtureSet, error) { return fileSet(16) },
				prepare: func(r *receiverRun) (err error) {
					restore, err = limitFiles(r.a.holder, 3)
					return err
				},
				after: func(r *receiverRun) error {
					if restore == nil {
						return nil
					}
					return restore()
				},
				script: (*senderScript).wholeSession,
			}
		}())

		e.delivers("a BATCH of 252 descriptors read with SO_PASSCRED and SO_PASSPIDFD on, credentials first", "TRN-7", receiverScenario{
			fixtures: func() (fixtureSet, error) { return fileSet(252) },
			prepare: func(r *receiverRun) error {
				err := setSockOpts(r.a.holder, r.path, unix.SO_PASSCRED, soPassPidfd)
				if errors.Is(err, errNoOption) {
					// Without SO_PASSPIDFD, credentials alone.
					return setSockOpts(r.a.holder, r.path, unix.SO_PASSCRED)
				}
				return err
			},
			script: (*senderScript).wholeSession,
		}, Label(LabelSlow))

		e.rejects(badSender{name: "253 descriptors in one message", ids: "TRN-7", codes: malformed, should: true,
			fixtures: one,
			script: func(s *senderScript) error {
				fds := make([]int, 253)
				for i := range fds {
					fds[i] = s.set[0].fd
				}
				return s.p.send(welcome(), fds...)
			}})

		e.describe("a listener that never accepts, its backlog full", Label(LabelSlow), func() {
			run := e.lazyReceiver(receiverScenario{fixtures: one, noAccept: true, short: true})
			e.verify("gives up connecting within its deadline and reports failure", "TRN-8", func() {
				r := run()
				r.mustRun()
				Expect(r.reply.OK).To(BeFalse(), "connected to a listener that never accepts"+r.transcript())
				r.expectNothingDelivered()
				r.expectTable()
			})
		})

		e.rejects(badSender{name: "a sender that goes silent after HELLO", ids: "TRN-8", survives: true, deadline: true, decorators: []any{Label(LabelSlow)},
			fixtures: one,
			script:   func(s *senderScript) error { return nil }})
		e.rejects(badSender{name: "a sender that goes silent inside a BATCH frame", ids: "TRN-8", survives: true, deadline: true, decorators: []any{Label(LabelSlow)},
			fixtures: one,
			script: func(s *senderScript) error {
				b := batchOf(s.set)
				return s.p.send(frames(welcome(), b[:len(b)-2]), s.set.fds()...)
			}})
		e.rejects(badSender{name: "a sender that trickles a BATCH a byte at a time, each byte within the deadline, the frame not",
			ids: "TRN-8", survives: true, deadline: true, decorators: []any{Label(LabelSlow)},
			fixtures: one, timeout: trickleDeadline,
			script: func(s *senderScript) error {
				if err := s.p.send(welcome()); err != nil {
					return err
				}
				s.p.trickle(frames(batchOf(s.set), endOf(1)), 0, trickleInterval, s.set.fds()...)
				return nil
			}})
	})

	e.describe("the implementation as sender", iut("sender"), func() {
		e.describe("a receiver that trickles its HELLO a byte at a time, each byte within the deadline, the frame not", Label(LabelSlow), func() {
			run := e.lazySender(senderScenario{fixtures: one, timeout: trickleDeadline, script: func(s *receiverScript) {
				s.refusedSession(func(p *wirePeer) error {
					p.trickle(hello1(), -1, trickleInterval)
					return nil
				})
				s.result()
			}})
			e.verify("gives up within its deadline, sends nothing, not even an ERROR, and reports failure", "TRN-8", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				Expect(l.frames).To(BeEmpty(), "frames written to a peer whose deadline passed"+r.transcript())
				Expect(l.end).NotTo(HaveOccurred(), "the connection was not closed"+r.transcript())
				Expect(l.received).To(BeZero(), r.transcript())
				Expect(r.result(0).reply.OK).To(BeFalse(), "the hand-off was reported as done"+r.transcript())
			})
		})

		e.describe("a HELLO written one byte per sendmsg", func() {
			run := e.lazySender(senderScenario{fixtures: mixedSet, script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				defer p.close()
				if err := p.trickle(hello1(), -1, time.Millisecond); err != nil {
					s.note("HELLO: %v", err)
				}
				l := s.readSet(p)
				s.finishSession(p, l, wire.AppendCount(nil, wire.TypeAck, uint32(len(l.records))), true)
				s.result()
			}})
			e.verify("is read whole and answered with the set", "TRN-1", func() {
				r := run()
				r.mustServe()
				r.expectRecords(r.session(0))
			})
		})

		e.describe("a receiver that never acknowledges", Label(LabelSlow), func() {
			run := e.lazySender(senderScenario{fixtures: one, short: true, script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				defer p.close()
				p.send(hello1())
				s.readSet(p)
				s.result() // while the connection stays open
				after := &sessionLog{welcome: -1, endCount: -1}
				after.frames, after.end = readAll(p)
				s.run.sessions = append(s.run.sessions, after)
			}})
			e.verify("gives up within its deadline, closes without an ERROR, and reports failure", "TRN-8", func() {
				r := run()
				r.mustServe()
				Expect(r.result(0).reply.OK).To(BeFalse(), "a session without ACK succeeded"+r.transcript())
				r.expectAnswered(0)
			})
		})

		e.describe("a receiver that stops reading in the middle of the set", Label(LabelSlow), func() {
			run := e.lazySender(senderScenario{fixtures: metaSet(repeat(wire.MaxMetaSize, 48)...), short: true, script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				defer p.close()
				p.send(hello1())
				s.result() // reading nothing: 3 MiB cannot fit in the socket's buffers
			}})
			e.verify("gives up writing within its deadline and reports failure", "TRN-8", func() {
				r := run()
				r.mustServe()
				Expect(r.result(0).reply.OK).To(BeFalse(), "a set nobody read reported as handed over"+r.transcript())
			})
		})

		e.describe("a receiver that reads the set slowly, 16 KiB every 64 ms", Label(LabelSlow), func() {
			// About 250 KB/s: a 1 MiB BATCH takes over 4 s to read, more
			// than its 3 s deadline, while the writer sees progress (its
			// socket's buffer three quarters drained, which is when the
			// kernel says it is writable again) every 0.7 s or so.
			const step = 3 * time.Second
			run := e.lazySender(senderScenario{fixtures: metaSet(repeat(wire.MaxMetaSize, 30)...), timeout: step,
				script: func(s *receiverScript) {
					p, err := s.dial()
					if err != nil {
						return
					}
					defer p.close()
					p.send(hello1())
					whole := wire.HeaderSize + 2 + wire.HeaderSize + 4 + len(wire.AppendBatch(nil, s.run.set.records())) +
						wire.HeaderSize // WELCOME, END, and the header of a second BATCH frame at least
					got, err := p.readSlowly(16<<10, 64*time.Millisecond, 10*step, whole)
					s.run.checks["slow"] = err
					s.run.counts = map[string]int{"read": got, "whole": whole}
					s.result()
				}})
			e.verify("gives up on a frame write that outlasts its deadline, however steadily the bytes go", "TRN-8", func() {
				r := run()
				r.mustServe()
				Expect(r.checks["slow"]).NotTo(HaveOccurred(), r.transcript())
				Expect(r.counts["read"]).To(BeNumerically("<", r.counts["whole"]), "the whole set came, each frame taking longer than its deadline"+r.transcript())
				Expect(r.result(0).reply.OK).To(BeFalse(), "a set read this slowly reported as handed over"+r.transcript())
			})
		})

		e.describe("a connection left open and idle after a session", Label(LabelSlow), func() {
			run := e.lazySender(senderScenario{fixtures: one, timeout: 2 * trickleDeadline, script: func(s *receiverScript) {
				p, l := s.open()
				if p == nil {
					return
				}
				defer p.close()
				p.send(frames(ack(len(l.records)), wire.AppendReady(nil)))
				s.result() // once the implementation closed the idle connection
				after := &sessionLog{welcome: -1, endCount: -1}
				after.frames, after.end = readAll(p)
				s.run.sessions = append(s.run.sessions, after)
			}})
			e.verify("is closed at the deadline, without an ERROR, and the session counts as ready", "TRN-8", func() {
				r := run()
				r.mustServe()
				Expect(r.result(0).reply.Outcome).To(Equal("ready"), "the session before the idle wait"+r.transcript())
				r.expectAnswered(0)
			})
		})

		e.describe("a receiver that connects and says nothing", Label(LabelSlow), func() {
			run := e.lazySender(senderScenario{fixtures: one, short: true, script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				defer p.close()
				s.result()
				l := &sessionLog{welcome: -1, endCount: -1}
				l.frames, l.end = readAll(p)
				l.received = len(p.received)
				s.run.sessions = append(s.run.sessions, l)
			}})
			e.verify("gives up within its deadline, sends nothing, not even an ERROR, and reports failure", "TRN-8", func() {
				r := run()
				r.mustServe()
				Expect(r.result(0).reply.OK).To(BeFalse(), "a session without HELLO succeeded"+r.transcript())
				Expect(r.session(0).received).To(BeZero(), "descriptors sent without a HELLO"+r.transcript())
				Expect(r.session(0).frames).To(BeEmpty(), "frames written to a peer whose deadline passed"+r.transcript())
			})
		})
	})
}
