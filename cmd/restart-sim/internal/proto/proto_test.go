package proto_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
)

func TestProto(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "restart-sim proto")
}

var _ = Describe("the messages", func() {
	It("round-trip the HTTP answer", func() {
		gen, id, err := proto.ParseHTTPBody(proto.HTTPBody(12, "3-45"))
		Expect(err).NotTo(HaveOccurred())
		Expect(gen).To(Equal(12))
		Expect(id).To(Equal("3-45"))
		for _, bad := range []string{"", "g=x id=1", "gen=1 id=1", "g=1", "g=1 di=2"} {
			_, _, err := proto.ParseHTTPBody(bad)
			Expect(err).To(MatchError(proto.ErrMalformed), bad)
		}
	})

	It("round-trip stream frames", func() {
		req := make([]byte, proto.StreamRequestSize)
		proto.PutStreamRequest(req, 1<<40+3)
		seq, err := proto.ParseStreamRequest(req)
		Expect(err).NotTo(HaveOccurred())
		Expect(seq).To(Equal(uint64(1<<40 + 3)))
		req[9] ^= 0xff
		_, err = proto.ParseStreamRequest(req)
		Expect(err).To(MatchError(proto.ErrMalformed))

		reply := make([]byte, proto.StreamReplySize)
		want := proto.StreamReply{Seq: 9, Count: 10, Gen: 3, Status: proto.StatusOutOfOrder}
		proto.PutStreamReply(reply, want)
		Expect(proto.ParseStreamReply(reply)).To(Equal(want))
		_, err = proto.ParseStreamReply(reply[:5])
		Expect(err).To(MatchError(proto.ErrMalformed))
	})

	It("round-trip UDP datagrams", func() {
		req := make([]byte, proto.UDPRequestSize)
		proto.PutUDPRequest(req, 7, 99)
		reply, err := proto.UDPReply(make([]byte, proto.UDPReplySize), req, 5)
		Expect(err).NotTo(HaveOccurred())
		client, seq, gen, err := proto.ParseUDPReply(reply)
		Expect(err).NotTo(HaveOccurred())
		Expect([]int{int(client), int(seq), gen}).To(Equal([]int{7, 99, 5}))
		_, err = proto.UDPReply(make([]byte, proto.UDPReplySize), req[:3], 5)
		Expect(err).To(MatchError(proto.ErrMalformed))
	})

	It("round-trip lines and reject torn ones", func() {
		l := proto.Line{Writer: 2, N: 1234, Gen: 8}
		Expect(l.String()).To(Equal("w=2 n=1234 g=8"))
		Expect(proto.ParseLine(l.String())).To(Equal(l))
		for _, bad := range []string{"", "w=2 n=12", "w=2 n=12 g=", "w=2 n=-1 g=1", "x=2 n=1 g=1", "w=1 n=1 g=1 extra"} {
			_, err := proto.ParseLine(bad)
			Expect(err).To(MatchError(proto.ErrMalformed), bad)
		}
	})
})
