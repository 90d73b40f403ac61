//go:build linux

package graceful_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// receiveAgainst runs a Client session on one end of a socket pair while
// script plays the sender on the other. It returns the client's error and
// how many descriptors reached its callback (they are closed by then).
func receiveAgainst(client *graceful.Client, script func(p *rawPeer)) (error, int) {
	GinkgoHelper()
	a, b := socketPair()
	defer a.Close()
	handed := 0
	result := make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		result <- client.ReceiveFrom(a, func(fd int, _ io.Reader) error {
			handed++
			return os.NewFile(uintptr(fd), "received").Close()
		})
	}()
	p := newRawPeer(b)
	script(p)
	var err error
	Eventually(result).WithTimeout(10 * time.Second).Should(Receive(&err))
	b.Close()
	return err, handed
}

// welcomed plays the start of a sender session.
func welcomed(p *rawPeer) {
	GinkgoHelper()
	f := p.expect(wire.TypeHello)
	h, err := wire.ParseHello(f.Payload)
	Expect(err).NotTo(HaveOccurred())
	Expect(h).To(Equal(wire.Hello{MinVersion: 1, MaxVersion: 1}))
}

var _ = Describe("a receiver facing a broken sender", func() {
	client := &graceful.Client{Timeout: 2 * time.Second}

	DescribeTable("rejects the set, closes every descriptor it got, and says why",
		func(want error, code wire.Code, script func(p *rawPeer)) {
			err, handed := receiveAgainst(client, func(p *rawPeer) {
				welcomed(p)
				script(p)
				if code != 0 {
					p.expectError(code)
				}
			})
			Expect(err).To(MatchError(want))
			Expect(handed).To(BeZero(), "no descriptor of a failed set may reach the callback")
		},
		Entry("a WELCOME for a version it did not offer", graceful.ErrUnsupportedVersion, wire.CodeUnsupportedVersion, func(p *rawPeer) {
			p.send(wire.AppendWelcome(nil, 2))
		}),
		Entry("a BATCH before WELCOME", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			p.send(wire.AppendBatch(nil, records(1)), pipeFds(1)...)
		}),
		Entry("fewer descriptors than the BATCH declares", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			p.send(wire.AppendBatch(wire.AppendWelcome(nil, 1), records(3)), pipeFds(2)...)
		}),
		Entry("more descriptors than the BATCHes declare", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			b := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(2))
			p.send(wire.AppendCount(b, wire.TypeEnd, 2), pipeFds(3)...)
		}),
		Entry("an END whose count is wrong", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			b := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(2))
			p.send(wire.AppendCount(b, wire.TypeEnd, 3), pipeFds(2)...)
		}),
		Entry("non-zero flags", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			b := wire.AppendWelcome(nil, 1)
			b[1] = 1
			p.send(b)
		}),
		Entry("an unknown frame type", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			b := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(1))
			p.send(append(b, 99, 0, 0, 0, 0, 0, 0, 0), pipeFds(1)...)
		}),
		Entry("a frame over the length limit, refused before its payload", graceful.ErrTooLarge, wire.CodeTooLarge, func(p *rawPeer) {
			b := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(1))
			h := wire.AppendHeader(nil, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.MaxPayload + 1})
			p.send(append(b, h...), pipeFds(2)...)
		}),
		Entry("a record with metadata over 64 KiB", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			b := wire.AppendWelcome(nil, 1)
			meta := make([]byte, wire.MaxMetaSize+1)
			b = wire.AppendHeader(b, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: uint32(wire.RecordOverhead + len(meta))})
			b = append(b, byte(wire.KindFile), 1)
			b = binary.BigEndian.AppendUint32(b, uint32(len(meta)))
			p.send(append(b, meta...), pipeFds(1)...)
		}),
		Entry("records that do not fill the payload", graceful.ErrMalformed, wire.CodeMalformed, func(p *rawPeer) {
			b := wire.AppendWelcome(nil, 1)
			b = wire.AppendHeader(b, wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.RecordOverhead + 3})
			b = wire.AppendRecord(b, wire.Record{Kind: wire.KindFile})
			p.send(append(b, 1, 2, 3), pipeFds(1)...)
		}),
		Entry("an ERROR frame mid-set", graceful.ErrSenderFailed, wire.Code(0), func(p *rawPeer) {
			b := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(2))
			b = wire.AppendError(b, wire.ErrorFrame{Code: wire.CodeSenderFailed, Message: "disk on fire"})
			p.send(b, pipeFds(2)...)
		}),
		Entry("the sender closing mid-set", graceful.ErrPeerClosed, wire.Code(0), func(p *rawPeer) {
			b := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(2))
			p.send(b[:len(b)-3], pipeFds(2)...)
			p.c.Close()
		}),
		Entry("the sender closing before WELCOME", graceful.ErrPeerClosed, wire.Code(0), func(p *rawPeer) {
			p.c.Close()
		}),
		Entry("a sender that goes silent mid-set (deadline)", os.ErrDeadlineExceeded, wire.Code(0), func(p *rawPeer) {
			p.send(wire.AppendBatch(wire.AppendWelcome(nil, 1), records(1)), pipeFds(1)...)
		}),
	)

	// silentEnd runs a Client session against script and checks, once it
	// has failed with want, that it wrote nothing after HELLO: no ERROR
	// frame, only the end of the stream when its side is closed.
	silentEnd := func(want error, script func(p *rawPeer)) {
		GinkgoHelper()
		a, b := socketPair()
		handed := 0
		result := make(chan error, 1)
		go func() {
			result <- client.ReceiveFrom(a, func(fd int, _ io.Reader) error {
				handed++
				return os.NewFile(uintptr(fd), "received").Close()
			})
		}()
		p := newRawPeer(b)
		defer p.close()
		welcomed(p)
		script(p)
		var err error
		Eventually(result).WithTimeout(10 * time.Second).Should(Receive(&err))
		Expect(err).To(MatchError(want))
		Expect(handed).To(BeZero())
		Expect(a.Close()).To(Succeed())
		p.expectClosed() // an ERROR frame here fails
	}

	It("closes without an ERROR when the sender goes silent: no code names a deadline (TRN-8)", func() {
		silentEnd(os.ErrDeadlineExceeded, func(p *rawPeer) {
			p.send(wire.AppendBatch(wire.AppendWelcome(nil, 1), records(1)), pipeFds(1)...)
		})
	})

	DescribeTable("never answers an ERROR frame that breaks a rule, and fails (ERR-3)",
		func(frame func() []byte) {
			silentEnd(graceful.ErrMalformed, func(p *rawPeer) {
				p.send(append(wire.AppendBatch(wire.AppendWelcome(nil, 1), records(2)), frame()...), pipeFds(2)...)
			})
		},
		Entry("non-zero flags", func() []byte {
			b := wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeSenderFailed, Message: "x"})
			b[1] = 4
			return b
		}),
		Entry("a message length that does not fit", func() []byte {
			b := wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeSenderFailed, Message: "four"})
			b[wire.HeaderSize+3] = 2 // says 2 bytes, 4 follow
			return b
		}),
	)

	It("closes the descriptors the callback has not taken when it refuses one, and tells the sender", func() {
		fds := pipeFds(5)
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		var taken []int
		result := make(chan error, 1)
		go func() {
			result <- graceful.ReceiveFrom(a, func(fd int, _ io.Reader) error {
				taken = append(taken, fd)
				if len(taken) == 2 {
					return errors.New("not this one")
				}
				return nil
			})
		}()
		p := newRawPeer(b)
		welcomed(p)
		batch := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(5))
		p.send(wire.AppendCount(batch, wire.TypeEnd, 5), fds...)
		p.expectError(wire.CodeRejected)
		var err error
		Eventually(result).Should(Receive(&err))
		Expect(err).To(MatchError(graceful.ErrRejected))
		Expect(err).To(MatchError(ContainSubstring("not this one")))
		Expect(taken).To(HaveLen(2))
		for _, fd := range taken { // the callback owns these, even the refused one
			Expect(os.NewFile(uintptr(fd), "taken").Close()).To(Succeed())
		}
	})

	It("reads the sender's ERROR even when its HELLO cannot be written, the sender having closed (AUTH-9)", func() {
		a, b := socketPair()
		defer a.Close()
		p := newRawPeer(b)
		p.send(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeUnauthorized, Message: "not you"}))
		Expect(b.Close()).To(Succeed())
		err := graceful.ReceiveFrom(a, func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrUnauthorized))
		Expect(err).To(MatchError(ContainSubstring("not you")))
		Expect(err).NotTo(MatchError(graceful.ErrPeerClosed))
	})

	It("reports ErrNoServer when nothing listens, and ErrNotUnixConn for other connections", func() {
		err := graceful.Receive(socketAddr(), func(int, io.Reader) error { return nil })
		Expect(err).To(MatchError(graceful.ErrNoServer))

		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		Expect(graceful.ReceiveFrom(c1, nil)).To(MatchError(graceful.ErrNotUnixConn))
	})

	It("ignores SCM_CREDENTIALS that SO_PASSCRED adds before the descriptors", func() {
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		rc, err := a.SyscallConn()
		Expect(err).NotTo(HaveOccurred())
		Expect(rc.Control(func(fd uintptr) {
			Expect(setPassCred(int(fd))).To(Succeed())
		})).To(Succeed())
		fds := pipeFds(3)
		var ids []identity
		result := make(chan error, 1)
		go func() {
			result <- graceful.ReceiveFrom(a, func(fd int, _ io.Reader) error {
				ids = append(ids, identityOf(fd))
				return os.NewFile(uintptr(fd), "received").Close()
			})
		}()
		p := newRawPeer(b)
		welcomed(p)
		batch := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(3))
		p.send(wire.AppendCount(batch, wire.TypeEnd, 3), fds...)
		p.expect(wire.TypeAck)
		Eventually(result).Should(Receive(BeNil()))
		Expect(ids).To(Equal([]identity{identityOf(fds[0]), identityOf(fds[1]), identityOf(fds[2])}))
	})
})
