//go:build linux

package graceful_test

import (
	"io"
	"net"
	"os"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

var _ = Describe("a Client that checks kinds (CheckKinds, RCV-8)", func() {
	client := &graceful.Client{CheckKinds: true}

	It("takes a set whose descriptors are what the sender said, and does not check those it called raw", func() {
		ln, f, a, _ := kindFixtures()
		addr, done := serve(&graceful.Server{Handler: graceful.SequenceHandler(
			graceful.ListenerHandler(ln, nil),
			graceful.FileHandler(f, nil),
			graceful.ConnHandler(a, nil),
			graceful.FdHandler(pipeFds(1)[0], nil), // raw: a file, unchecked
		)})
		var set []got
		Expect(client.Receive(addr, collect(&set))).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(4))
	})

	DescribeTable("refuses a set with a descriptor that is not what the sender said, before any callback",
		func(kind graceful.Kind) {
			fds := pipeFds(2)
			addr, done := serve(&graceful.Server{Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
				Expect(w.WriteKind(fds[0], graceful.KindFile, nil)).To(Succeed())
				Expect(w.WriteKind(fds[1], kind, nil)).To(Succeed())
			})})
			called := 0
			err := client.Receive(addr, func(fd int, _ io.Reader) error {
				called++
				return os.NewFile(uintptr(fd), "received").Close()
			})
			Expect(err).To(MatchError(graceful.ErrMalformed))
			Expect(err).To(MatchError(ContainSubstring("descriptor 1 is a file")))
			Expect(called).To(BeZero())
			Eventually(done).Should(Receive(MatchError(graceful.ErrMalformed)))
		},
		Entry("a pipe said to be a listener", graceful.KindListener),
		Entry("a pipe said to be a connection", graceful.KindStream),
		Entry("a pipe said to be a packet socket", graceful.KindPacket),
	)
})

var _ = Describe("the kind a Handler declares", func() {
	It("is the value's: a listener, a file, and raw for a socket opened as an *os.File", func() {
		ln, f, a, b := kindFixtures()
		sock, err := b.File() // a dup: the socket, as an *os.File
		Expect(err).NotTo(HaveOccurred())
		defer sock.Close()
		addr, done := serve(&graceful.Server{ReadyTimeout: -1, Handler: graceful.SequenceHandler(
			graceful.ListenerHandler(ln, nil),
			graceful.FileHandler(f, nil),
			graceful.FileHandler(sock, nil),
			graceful.ConnHandler(a, nil),
		)})
		p := dialRaw(addr)
		p.send(hello())
		p.expect(wire.TypeWelcome)
		batch := p.expect(wire.TypeBatch)
		recs, err := wire.ParseBatch(batch.Payload, int(batch.Header.NFds))
		Expect(err).NotTo(HaveOccurred())
		var kinds []graceful.Kind
		for _, r := range recs {
			kinds = append(kinds, r.Kind)
		}
		Expect(kinds).To(Equal([]graceful.Kind{graceful.KindListener, graceful.KindFile, graceful.KindRaw, graceful.KindStream}))
		p.expect(wire.TypeEnd)
		p.send(wire.AppendCount(nil, wire.TypeAck, 4))
		Eventually(done).Should(Receive(BeNil()))
	})
})

// kindFixtures is one descriptor of each kind a Handler declares: a TCP
// listener, a file, and the two ends of a unix stream socket pair, all
// closed when the spec ends.
func kindFixtures() (ln net.Listener, f *os.File, a, b *net.UnixConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(ln.Close)
	f, err = os.CreateTemp(GinkgoT().TempDir(), "kind")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(f.Close)
	a, b = socketPair()
	DeferCleanup(a.Close)
	DeferCleanup(b.Close)
	return ln, f, a, b
}
