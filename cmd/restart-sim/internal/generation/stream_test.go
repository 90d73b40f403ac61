//go:build linux

package generation

import (
	"encoding/hex"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/graceful"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair() (client, server net.Conn) {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	Expect(err).NotTo(HaveOccurred())
	server, err = ln.Accept()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		client.Close() // some specs close it themselves
		server.Close()
	})
	return client, server
}

// dupConn returns a copy of c on a duplicate descriptor, as a successor
// receives it.
func dupConn(c net.Conn) net.Conn {
	GinkgoHelper()
	raw, err := c.(syscall.Conn).SyscallConn()
	Expect(err).NotTo(HaveOccurred())
	dup := -1
	Expect(raw.Control(func(fd uintptr) {
		dup, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})).To(Succeed())
	Expect(err).NotTo(HaveOccurred())
	copied, err := graceful.FdConn(dup)
	Expect(err).NotTo(HaveOccurred())
	return copied
}

// exchange sends frame seq in two writes split at cut, and returns the answer.
func exchange(c net.Conn, seq uint64, cut int) proto.StreamReply {
	GinkgoHelper()
	req := make([]byte, proto.StreamRequestSize)
	proto.PutStreamRequest(req, seq)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write(req[:cut])
	Expect(err).NotTo(HaveOccurred())
	_, err = c.Write(req[cut:])
	Expect(err).NotTo(HaveOccurred())
	reply := make([]byte, proto.StreamReplySize)
	_, err = io.ReadFull(c, reply)
	Expect(err).NotTo(HaveOccurred())
	r, err := proto.ParseStreamReply(reply)
	Expect(err).NotTo(HaveOccurred())
	return r
}

var _ = Describe("a stream", func() {
	var served atomic.Int64

	It("pauses between frames, resumes, and hands its state to a new owner", func() {
		client, server := tcpPair()
		old := newStream(server, 1, &served)
		go old.run()
		Expect(exchange(client, 0, 3)).To(Equal(proto.StreamReply{Seq: 0, Count: 1, Gen: 1}))

		By("pausing, then resuming")
		Expect(old.pause(5 * time.Second)).To(BeTrue())
		Expect(old.meta()).To(Equal(graceful.Meta{"role": "stream", "next": "1", "count": "1", "partial": ""}))
		old.proceed(true)
		Expect(exchange(client, 1, 8)).To(Equal(proto.StreamReply{Seq: 1, Count: 2, Gen: 1}))

		By("pausing for a hand-off that succeeds: the old loop ends and closes its descriptor; the successor's copy goes on")
		Expect(old.pause(5 * time.Second)).To(BeTrue())
		meta := old.meta()
		handed := dupConn(server)
		DeferCleanup(func() { handed.Close() })
		old.proceed(false)
		Eventually(old.done).WithTimeout(5 * time.Second).Should(BeClosed())
		successor, err := restoreStream(handed, 2, &served, meta)
		Expect(err).NotTo(HaveOccurred())
		go successor.run()
		Expect(exchange(client, 2, 1)).To(Equal(proto.StreamReply{Seq: 2, Count: 3, Gen: 2}))
		Expect(exchange(client, 3, 16)).To(Equal(proto.StreamReply{Seq: 3, Count: 4, Gen: 2}))

		client.Close()
		Eventually(successor.done).WithTimeout(5 * time.Second).Should(BeClosed())
	})

	It("completes a frame whose first bytes came in the metadata", func() {
		client, server := tcpPair()
		req := make([]byte, proto.StreamRequestSize)
		proto.PutStreamRequest(req, 7)
		meta := graceful.Meta{"role": "stream", "next": "7", "count": "7", "partial": hex.EncodeToString(req[:5])}
		st, err := restoreStream(server, 3, &served, meta)
		Expect(err).NotTo(HaveOccurred())
		go st.run()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = client.Write(req[5:])
		Expect(err).NotTo(HaveOccurred())
		reply := make([]byte, proto.StreamReplySize)
		_, err = io.ReadFull(client, reply)
		Expect(err).NotTo(HaveOccurred())
		Expect(proto.ParseStreamReply(reply)).To(Equal(proto.StreamReply{Seq: 7, Count: 8, Gen: 3}))
		client.Close()
		Eventually(st.done).WithTimeout(5 * time.Second).Should(BeClosed())
	})

	It("answers a frame out of order with an error status", func() {
		client, server := tcpPair()
		st := newStream(server, 0, &served)
		go st.run()
		Expect(exchange(client, 5, 16).Status).To(Equal(uint32(proto.StatusOutOfOrder)))
		client.Close()
		Eventually(st.done).WithTimeout(5 * time.Second).Should(BeClosed())
	})

	It("closes its descriptor when the peer goes away, and is then not paused", func() {
		client, server := tcpPair()
		st := newStream(server, 0, &served)
		go st.run()
		client.Close()
		Eventually(st.done).WithTimeout(5 * time.Second).Should(BeClosed())
		_, err := server.Write([]byte("x"))
		Expect(err).To(MatchError(net.ErrClosed), "the loop must close what it no longer serves")
		Expect(st.pause(time.Second)).To(BeFalse())
	})

	It("refuses metadata it cannot use", func() {
		_, server := tcpPair()
		for _, meta := range []graceful.Meta{
			{"next": "x", "count": "1"},
			{"next": "1", "count": ""},
			{"next": "1", "count": "1", "partial": "zz"},
			{"next": "1", "count": "1", "partial": hex.EncodeToString(make([]byte, proto.StreamRequestSize))},
		} {
			_, err := restoreStream(server, 0, &served, meta)
			Expect(err).To(HaveOccurred(), "%v", meta)
		}
	})
})

var _ = Describe("the line numbers in the file's metadata", func() {
	It("round-trip", func() {
		lw := &lineWriters{next: []uint64{3, 0, 12}}
		next, err := parseNext(lw.formatNext(), 3)
		Expect(err).NotTo(HaveOccurred())
		Expect(next).To(Equal([]uint64{3, 0, 12}))
		Expect(parseNext("", 2)).To(Equal([]uint64{0, 0}))
	})

	It("must match the number of writers", func() {
		_, err := parseNext("1,2", 3)
		Expect(err).To(HaveOccurred())
		_, err = parseNext("1,x,3", 3)
		Expect(err).To(HaveOccurred())
	})
})
