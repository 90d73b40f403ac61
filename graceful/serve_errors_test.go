//go:build linux

package graceful_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// dialRaw connects a hand-played receiver to a server at addr.
func dialRaw(addr string) *rawPeer {
	GinkgoHelper()
	c, err := net.Dial("unix", addr)
	Expect(err).NotTo(HaveOccurred())
	p := newRawPeer(c.(*net.UnixConn))
	DeferCleanup(p.close)
	return p
}

// expectBusyDuringSession starts a session with a raw receiver, which it
// leaves waiting after WELCOME, and checks that a second receiver is told
// BUSY meanwhile (AUTH-4) and that done hears of it. It returns the first.
func expectBusyDuringSession(addr string, done <-chan error) *rawPeer {
	GinkgoHelper()
	first := dialRaw(addr)
	first.send(hello())
	first.expect(wire.TypeWelcome)
	second := dialRaw(addr)
	second.send(hello())
	second.expectError(wire.CodeBusy)
	Eventually(done).Should(Receive(MatchError(graceful.ErrBusy)))
	return first
}

// readSet plays a receiver through END and returns the count.
func readSet(p *rawPeer) uint32 {
	GinkgoHelper()
	p.expect(wire.TypeWelcome)
	for {
		f, err := p.next()
		Expect(err).NotTo(HaveOccurred())
		switch f.Header.Type {
		case wire.TypeBatch:
		case wire.TypeEnd:
			n, err := wire.ParseCount(f.Payload)
			Expect(err).NotTo(HaveOccurred())
			return n
		default:
			Fail("unexpected " + f.Header.Type.String())
		}
	}
}

var _ = Describe("a sender facing a broken or unwelcome receiver", func() {
	var (
		ln       net.Listener
		srv      *graceful.Server
		addr     string
		done     <-chan error
		sessions int
	)
	BeforeEach(func() {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(ln.Close)
		sessions = 0
		srv = &graceful.Server{
			Handler: graceful.SequenceHandler(
				graceful.CallbackHandler(func() { sessions++ }),
				graceful.ListenerHandler(ln, nil),
			),
			Timeout:      time.Second,
			ReadyTimeout: time.Second,
		}
	})
	JustBeforeEach(func() { addr, done = serve(srv) })

	DescribeTable("answers a bad HELLO with an ERROR and sends nothing",
		func(code wire.Code, want error, frame func() []byte) {
			p := dialRaw(addr)
			p.send(frame())
			p.expectError(code)
			p.expectClosed()
			Eventually(done).Should(Receive(MatchError(want)))
			Expect(sessions).To(BeZero())
		},
		Entry("wrong magic", wire.CodeMalformed, graceful.ErrMalformed, func() []byte {
			b := hello()
			copy(b[wire.HeaderSize:], "NOTMAGIC")
			return b
		}),
		Entry("versions it does not speak", wire.CodeUnsupportedVersion, graceful.ErrUnsupportedVersion, func() []byte {
			return wire.AppendHello(nil, wire.Hello{MinVersion: 2, MaxVersion: 5})
		}),
		Entry("an inverted range", wire.CodeUnsupportedVersion, graceful.ErrUnsupportedVersion, func() []byte {
			return wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 0})
		}),
		Entry("not a HELLO", wire.CodeMalformed, graceful.ErrMalformed, func() []byte {
			return wire.AppendCount(nil, wire.TypeAck, 0)
		}),
	)

	It("negotiates version 1 with a receiver that also speaks later versions", func() {
		p := dialRaw(addr)
		p.send(wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 7}))
		f := p.expect(wire.TypeWelcome)
		v, err := wire.ParseWelcome(f.Payload)
		Expect(err).NotTo(HaveOccurred())
		Expect(v).To(Equal(uint16(1)))
	})

	Context("with a policy that refuses the peer", func() {
		BeforeEach(func() {
			srv.Authorize = func(c graceful.PeerCred) error {
				if c.UID == os.Geteuid() {
					return errors.New("not today")
				}
				return nil
			}
		})
		It("refuses it with UNAUTHORIZED at once, without waiting for its HELLO, and sends nothing", func() {
			p := dialRaw(addr)
			p.expectError(wire.CodeUnauthorized)
			p.expectClosed()
			Eventually(done).Should(Receive(MatchError(graceful.ErrUnauthorized)))
			Expect(sessions).To(BeZero())

			err := graceful.Receive(addr, func(fd int, _ io.Reader) error { return nil })
			Expect(err).To(MatchError(graceful.ErrUnauthorized))
		})
	})

	It("fails the session on a wrong ACK count, and keeps serving the next receiver", func() {
		p := dialRaw(addr)
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(1)))
		p.send(wire.AppendCount(nil, wire.TypeAck, 2))
		Eventually(done).Should(Receive(MatchError(graceful.ErrMalformed)))

		var set []got
		Expect(graceful.Receive(addr, collect(&set))).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(1))
	})

	It("reports a receiver that closes after ACK without READY as not ready", func() {
		p := dialRaw(addr)
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(1)))
		p.send(wire.AppendCount(nil, wire.TypeAck, 1))
		p.c.Close()
		Eventually(done).Should(Receive(MatchError(graceful.ErrNotReady)))
	})

	It("gives up on a receiver that never says READY, at the deadline", func() {
		p := dialRaw(addr)
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(1)))
		p.send(wire.AppendCount(nil, wire.TypeAck, 1))
		Eventually(done).WithTimeout(5 * time.Second).Should(Receive(MatchError(os.ErrDeadlineExceeded)))
	})

	It("gives up on a receiver that never says HELLO, at the deadline", func() {
		dialRaw(addr)
		Eventually(done).WithTimeout(5 * time.Second).Should(Receive(MatchError(os.ErrDeadlineExceeded)))
	})

	It("closes without an ERROR when a deadline passes: no code names a deadline (TRN-8)", func() {
		p := dialRaw(addr)
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(1)))
		Eventually(done).WithTimeout(5 * time.Second).Should(Receive(MatchError(os.ErrDeadlineExceeded)))
		p.expectClosed() // an ERROR frame here would fail: closed, nothing said
	})

	DescribeTable("never answers an ERROR frame that breaks a rule, and ends the session (ERR-3)",
		func(atACK bool, frame func() []byte) {
			p := dialRaw(addr)
			if atACK {
				p.send(hello())
				Expect(readSet(p)).To(Equal(uint32(1)))
			}
			p.send(frame())
			Eventually(done).Should(Receive(MatchError(graceful.ErrMalformed)))
			p.expectClosed()
		},
		Entry("non-zero flags, where HELLO is due", false, func() []byte {
			b := wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeRejected, Message: "x"})
			b[1] = 1
			return b
		}),
		Entry("descriptors declared, where HELLO is due", false, func() []byte {
			b := wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeRejected, Message: "x"})
			b[3] = 2
			return b
		}),
		Entry("a message length that does not fit, where ACK is due", true, func() []byte {
			b := wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeRejected, Message: "four"})
			b[wire.HeaderSize+3] = 9 // says 9 bytes, 4 follow
			return b
		}),
		Entry("a message over 1024 bytes, where ACK is due", true, func() []byte {
			b := wire.AppendHeader(nil, wire.Header{Type: wire.TypeError, Length: 4 + wire.MaxErrorText + 1})
			b = binary.BigEndian.AppendUint16(b, uint16(wire.CodeRejected))
			b = binary.BigEndian.AppendUint16(b, wire.MaxErrorText+1)
			return append(b, make([]byte, wire.MaxErrorText+1)...)
		}),
	)

	It("takes a HELLO where READY is due as the start of another session: the first is not ready, and the connection is closed without a word (RDY-2, RDY-5)", func() {
		p := dialRaw(addr)
		p.send(hello())
		Expect(readSet(p)).To(Equal(uint32(1)))
		p.send(append(wire.AppendCount(nil, wire.TypeAck, 1), hello()...))
		var err error
		Eventually(done).Should(Receive(&err))
		Expect(err).To(MatchError(graceful.ErrNotReady))
		Expect(err).NotTo(MatchError(graceful.ErrMalformed))
		p.expectClosed()
	})

	It("tells the receiver of a rejected set, and reports it", func() {
		err := graceful.Receive(addr, func(fd int, _ io.Reader) error {
			os.NewFile(uintptr(fd), "refused").Close()
			return errors.New("no thanks")
		})
		Expect(err).To(MatchError(graceful.ErrRejected))
		Eventually(done).Should(Receive(MatchError(graceful.ErrRejected)))
	})

	It("takes no descriptor a receiver sends it: the kernel refuses them (SO_PASSRIGHTS), or they are discarded unread", func() {
		p := dialRaw(addr)
		base := fdCount()
		p.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		err := fdpass.Write(p.c, wire.AppendBatch(nil, records(3)), fdpass.AppendRights(nil, pipeFds(3)))
		if errors.Is(err, syscall.EPERM) {
			By("the kernel refused the descriptors: the frame goes without them")
			p.send(wire.AppendBatch(nil, records(3)))
		} else {
			Expect(err).NotTo(HaveOccurred())
		}
		p.expectError(wire.CodeMalformed)
		Eventually(done).Should(Receive(MatchError(graceful.ErrMalformed)))
		Expect(fdCount()).To(BeNumerically("<=", base+6), "only the pipes made here")
	})

	It("answers a second receiver with BUSY while a session runs", func() {
		first := expectBusyDuringSession(addr, done)

		first.c.Close()
		Eventually(done).Should(Receive(MatchError(graceful.ErrPeerClosed)))
	})

	Context("when metadata is too large", func() {
		BeforeEach(func() {
			srv.Handler = graceful.SequenceHandler(
				graceful.ListenerHandler(ln, nil),
				graceful.ListenerHandler(ln, graceful.Meta{"big": strings.Repeat("x", wire.MaxMetaSize)}),
			)
		})
		It("fails the session with ErrMetaTooLarge rather than truncating, and the receiver gets nothing", func() {
			calls := 0
			err := graceful.Receive(addr, func(fd int, _ io.Reader) error { calls++; return nil })
			Expect(err).To(MatchError(graceful.ErrSenderFailed))
			Expect(calls).To(BeZero())
			var serr error
			Eventually(done).Should(Receive(&serr))
			Expect(serr).To(MatchError(graceful.ErrMetaTooLarge))
		})
	})

	It("ends a session in progress on Close", func() {
		p := dialRaw(addr)
		p.send(hello())
		p.expect(wire.TypeWelcome)
		Expect(srv.Close()).To(Succeed())
		Eventually(done).Should(Receive(HaveOccurred()))
	})
})
