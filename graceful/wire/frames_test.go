package wire_test

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// header builds a frame header by hand, big-endian, as section 3 lays it
// out, independently of the code under test.
func header(typ, flags byte, nfds uint16, length uint32) []byte {
	return []byte{
		typ, flags,
		byte(nfds >> 8), byte(nfds),
		byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length),
	}
}

// cat joins byte slices into a new one.
func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// prefix is put in front of every Append* call, to check that appending
// leaves what was there.
var prefix = []byte("prefix")

// appended runs an Append* function after prefix, checks that the prefix
// is intact and returns what was appended.
func appended(f func([]byte) []byte) []byte {
	GinkgoHelper()
	b := f(bytes.Clone(prefix))
	Expect(b[:len(prefix)]).To(Equal(prefix), "Append* changed the bytes before it")
	return b[len(prefix):]
}

// splitFrame parses the header of a whole encoded frame and checks that
// the frame is exactly header plus length bytes.
func splitFrame(b []byte) (wire.Header, []byte) {
	GinkgoHelper()
	Expect(len(b)).To(BeNumerically(">=", wire.HeaderSize))
	h, err := wire.ParseHeader(b)
	Expect(err).NotTo(HaveOccurred())
	Expect(b[wire.HeaderSize:]).To(HaveLen(int(h.Length)), "frame length field disagrees with the bytes")
	return h, b[wire.HeaderSize:]
}

var _ = Describe("frame layouts (FRM-1: big-endian, exactly as section 3)", func() {
	It("AppendHeader puts type, flags, nfds and length at offsets 0, 1, 2 and 4", func() {
		b := appended(func(b []byte) []byte {
			return wire.AppendHeader(b, wire.Header{Type: 0x03, Flags: 0x7f, NFds: 0x0102, Length: 0x03040506})
		})
		Expect(b).To(Equal([]byte{0x03, 0x7f, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}))
	})

	It("ParseHeader reads nfds and length big-endian", func() {
		h, err := wire.ParseHeader([]byte{0x03, 0x00, 0x00, 0xfc, 0x00, 0x0a, 0x0b, 0x0c})
		Expect(err).NotTo(HaveOccurred())
		Expect(h).To(Equal(wire.Header{Type: wire.TypeBatch, NFds: 252, Length: 0x000a0b0c}))

		// 0x0100 descriptors is 256 big-endian (too many) but would be 1
		// little-endian.
		_, err = wire.ParseHeader([]byte{0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00})
		Expect(err).To(MatchError(wire.ErrMalformed))
	})

	It("ParseHeader reads only the first 8 bytes", func() {
		h, err := wire.ParseHeader([]byte{0x06, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
		Expect(err).NotTo(HaveOccurred())
		Expect(h).To(Equal(wire.Header{Type: wire.TypeReady}))
	})

	DescribeTable("every frame type encodes to the bytes of its table",
		func(encode func([]byte) []byte, want []byte) {
			Expect(appended(encode)).To(Equal(want))
		},
		Entry("HELLO (3.1)",
			func(b []byte) []byte { return wire.AppendHello(b, wire.Hello{MinVersion: 0x0102, MaxVersion: 0x0304}) },
			[]byte{0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
				'G', 'R', 'A', 'C', 'E', 'F', 'U', 'L',
				0x01, 0x02,
				0x03, 0x04}),
		Entry("WELCOME (3.2)",
			func(b []byte) []byte { return wire.AppendWelcome(b, 0x0102) },
			[]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
				0x01, 0x02}),
		Entry("BATCH (3.3), three records: no metadata, metadata, empty metadata",
			func(b []byte) []byte {
				return wire.AppendBatch(b, []wire.Record{
					{Kind: wire.KindListener},
					{Kind: wire.KindStream, HasMeta: true, Meta: []byte("abc")},
					{Kind: wire.KindFile, HasMeta: true, Meta: []byte{}},
				})
			},
			[]byte{0x03, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 21,
				0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
				0x03, 0x01, 0x00, 0x00, 0x00, 0x03, 'a', 'b', 'c',
				0x01, 0x01, 0x00, 0x00, 0x00, 0x00}),
		Entry("BATCH record with 258 metadata bytes (meta_length big-endian)",
			func(b []byte) []byte {
				return wire.AppendBatch(b, []wire.Record{{Kind: wire.KindPacket, HasMeta: true, Meta: bytes.Repeat([]byte{'m'}, 0x0102)}})
			},
			cat([]byte{0x03, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x08,
				0x04, 0x01, 0x00, 0x00, 0x01, 0x02}, bytes.Repeat([]byte{'m'}, 0x0102))),
		Entry("END (3.4)",
			func(b []byte) []byte { return wire.AppendCount(b, wire.TypeEnd, 0x01020304) },
			[]byte{0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
				0x01, 0x02, 0x03, 0x04}),
		Entry("ACK (3.4)",
			func(b []byte) []byte { return wire.AppendCount(b, wire.TypeAck, 0x0a0b0c0d) },
			[]byte{0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
				0x0a, 0x0b, 0x0c, 0x0d}),
		Entry("READY (3.5)",
			func(b []byte) []byte { return wire.AppendReady(b) },
			[]byte{0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}),
		Entry("ERROR (3.6)",
			func(b []byte) []byte {
				return wire.AppendError(b, wire.ErrorFrame{Code: 0x0102, Message: "hi"})
			},
			[]byte{0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06,
				0x01, 0x02,
				0x00, 0x02,
				'h', 'i'}),
	)

	It("uses the type numbers, kinds and error codes of the spec's tables", func() {
		Expect([]wire.Type{wire.TypeHello, wire.TypeWelcome, wire.TypeBatch, wire.TypeEnd, wire.TypeAck, wire.TypeReady, wire.TypeError}).
			To(Equal([]wire.Type{1, 2, 3, 4, 5, 6, 7}))
		Expect([]wire.Kind{wire.KindRaw, wire.KindFile, wire.KindListener, wire.KindStream, wire.KindPacket}).
			To(Equal([]wire.Kind{0, 1, 2, 3, 4}))
		Expect([]wire.Code{wire.CodeMalformed, wire.CodeUnsupportedVersion, wire.CodeUnauthorized, wire.CodeTooLarge,
			wire.CodeTruncated, wire.CodeRejected, wire.CodeSenderFailed, wire.CodePeerClosed, wire.CodeBusy}).
			To(Equal([]wire.Code{1, 2, 3, 4, 5, 6, 7, 8, 9}))
		Expect(wire.Magic).To(Equal("GRACEFUL"))
		Expect(wire.Version).To(Equal(1))
		Expect([]int{wire.HeaderSize, wire.MaxFdsPerBatch, wire.MaxMetaSize, wire.MaxPayload, wire.MaxErrorText, wire.RecordOverhead}).
			To(Equal([]int{8, 252, 65536, 1048576, 1024, 6}))
	})

	It("names types, kinds and codes for logs, known or not", func() {
		Expect(wire.TypeBatch.String()).To(Equal("BATCH"))
		Expect(wire.Type(9).String()).To(Equal("type(9)"))
		Expect(wire.KindListener.String()).To(Equal("listener"))
		Expect(wire.Kind(5).String()).To(Equal("kind(5)"))
		Expect(wire.CodeBusy.String()).To(Equal("BUSY"))
		Expect(wire.Code(0xbeef).String()).To(Equal("code(48879)"))
		Expect(wire.Header{Type: wire.TypeBatch, NFds: 2, Length: 12}.String()).To(Equal("BATCH{flags=0 nfds=2 length=12}"))
	})
})

var _ = Describe("FixedSize", func() {
	DescribeTable("is the whole size of each frame type whose payload is fixed",
		func(t wire.Type, frame []byte) {
			size, ok := wire.FixedSize(t)
			Expect(ok).To(BeTrue())
			Expect(size).To(Equal(len(frame)))
		},
		Entry("HELLO: 20", wire.TypeHello, wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1})),
		Entry("WELCOME: 10", wire.TypeWelcome, wire.AppendWelcome(nil, 1)),
		Entry("END: 12", wire.TypeEnd, wire.AppendCount(nil, wire.TypeEnd, 1)),
		Entry("ACK: 12", wire.TypeAck, wire.AppendCount(nil, wire.TypeAck, 1)),
		Entry("READY: 8", wire.TypeReady, wire.AppendReady(nil)),
	)

	It("gives the spec's sizes", func() {
		for t, want := range map[wire.Type]int{wire.TypeHello: 20, wire.TypeWelcome: 10, wire.TypeEnd: 12, wire.TypeAck: 12, wire.TypeReady: 8} {
			size, ok := wire.FixedSize(t)
			Expect(ok).To(BeTrue(), "%v", t)
			Expect(size).To(Equal(want), "%v", t)
		}
	})

	DescribeTable("says no for the others", func(t wire.Type) {
		_, ok := wire.FixedSize(t)
		Expect(ok).To(BeFalse())
	},
		Entry("BATCH", wire.TypeBatch),
		Entry("ERROR", wire.TypeError),
		Entry("type 0", wire.Type(0)),
		Entry("type 8", wire.Type(8)),
	)
})

var _ = Describe("round trips", func() {
	DescribeTable("HELLO", func(h wire.Hello) {
		hd, p := splitFrame(appended(func(b []byte) []byte { return wire.AppendHello(b, h) }))
		Expect(hd).To(Equal(wire.Header{Type: wire.TypeHello, Length: 12}))
		got, err := wire.ParseHello(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(h))
	},
		Entry("version 1 only", wire.Hello{MinVersion: 1, MaxVersion: 1}),
		Entry("a range", wire.Hello{MinVersion: 1, MaxVersion: 7}),
		Entry("inverted range (the sender judges it, NEG-3)", wire.Hello{MinVersion: 9, MaxVersion: 2}),
		Entry("extremes", wire.Hello{MinVersion: 0, MaxVersion: 0xffff}),
	)

	DescribeTable("WELCOME", func(v uint16) {
		hd, p := splitFrame(appended(func(b []byte) []byte { return wire.AppendWelcome(b, v) }))
		Expect(hd).To(Equal(wire.Header{Type: wire.TypeWelcome, Length: 2}))
		got, err := wire.ParseWelcome(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(v))
	},
		Entry("1", uint16(1)),
		Entry("0", uint16(0)),
		Entry("max", uint16(0xffff)),
	)

	DescribeTable("END and ACK", func(t wire.Type, n uint32) {
		hd, p := splitFrame(appended(func(b []byte) []byte { return wire.AppendCount(b, t, n) }))
		Expect(hd).To(Equal(wire.Header{Type: t, Length: 4}))
		got, err := wire.ParseCount(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(n))
	},
		Entry("END 0", wire.TypeEnd, uint32(0)),
		Entry("END 253", wire.TypeEnd, uint32(253)),
		Entry("END 2^32-1", wire.TypeEnd, uint32(0xffffffff)),
		Entry("ACK 1", wire.TypeAck, uint32(1)),
		Entry("ACK 2^32-1", wire.TypeAck, uint32(0xffffffff)),
	)

	It("READY", func() {
		hd, p := splitFrame(appended(wire.AppendReady))
		Expect(hd).To(Equal(wire.Header{Type: wire.TypeReady}))
		Expect(p).To(BeEmpty())
	})

	DescribeTable("ERROR", func(e wire.ErrorFrame) {
		hd, p := splitFrame(appended(func(b []byte) []byte { return wire.AppendError(b, e) }))
		Expect(hd).To(Equal(wire.Header{Type: wire.TypeError, Length: uint32(4 + len(e.Message))}))
		got, err := wire.ParseError(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(e))
	},
		Entry("empty message", wire.ErrorFrame{Code: wire.CodeBusy}),
		Entry("every known code", wire.ErrorFrame{Code: wire.CodeSenderFailed, Message: "sendmsg: bad file descriptor"}),
		Entry("unknown code, kept for ERR-3", wire.ErrorFrame{Code: 0xbeef, Message: "from the future"}),
		Entry("UTF-8 text", wire.ErrorFrame{Code: wire.CodeRejected, Message: "refusé ✗"}),
		Entry("1024 bytes, the limit", wire.ErrorFrame{Code: wire.CodeMalformed, Message: strings.Repeat("x", wire.MaxErrorText)}),
	)

	It("ERROR: a message over 1024 bytes is cut to 1024, and the frame stays valid", func() {
		long := strings.Repeat("0123456789", 200)
		hd, p := splitFrame(appended(func(b []byte) []byte {
			return wire.AppendError(b, wire.ErrorFrame{Code: wire.CodeMalformed, Message: long})
		}))
		Expect(hd.Length).To(Equal(uint32(4 + wire.MaxErrorText)))
		got, err := wire.ParseError(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Message).To(Equal(long[:wire.MaxErrorText]))
	})

	It("ERROR: cutting a long message keeps it UTF-8 (section 3.6: the message is UTF-8 text)", func() {
		// 1023 ASCII bytes, then two-byte runes: a cut at byte 1024 falls
		// inside a rune.
		long := strings.Repeat("x", wire.MaxErrorText-1) + strings.Repeat("é", 10)
		_, p := splitFrame(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeMalformed, Message: long}))
		got, err := wire.ParseError(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(utf8.ValidString(got.Message)).To(BeTrue(), "message cut inside a rune: %q", got.Message[len(got.Message)-4:])
		Expect(len(got.Message)).To(BeNumerically("<=", wire.MaxErrorText))
		Expect(long).To(HavePrefix(got.Message))
	})

	DescribeTable("BATCH", func(recs []wire.Record) {
		hd, p := splitFrame(appended(func(b []byte) []byte { return wire.AppendBatch(b, recs) }))
		Expect(hd.Type).To(Equal(wire.TypeBatch))
		Expect(hd.NFds).To(Equal(uint16(len(recs))))
		Expect(int(hd.Length)).To(Equal(wire.BatchLength(recs)))
		got, err := wire.ParseBatch(p, int(hd.NFds))
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(HaveLen(len(recs)))
		for i, r := range got {
			Expect(r.Kind).To(Equal(recs[i].Kind), "record %d", i)
			Expect(r.HasMeta).To(Equal(recs[i].HasMeta), "record %d", i)
			Expect(string(r.Meta)).To(Equal(string(recs[i].Meta)), "record %d", i)
			// RCV-7: "no metadata" and "empty metadata" stay distinct.
			Expect(r.Meta == nil).To(Equal(!recs[i].HasMeta), "record %d: nil Meta must mean no metadata", i)
			// Meta aliases the payload but must not let an append run
			// into the next record.
			Expect(cap(r.Meta)).To(Equal(len(r.Meta)), "record %d", i)
		}
	},
		Entry("one RAW record", []wire.Record{{Kind: wire.KindRaw}}),
		Entry("every kind, with and without metadata", []wire.Record{
			{Kind: wire.KindRaw, HasMeta: true, Meta: []byte("raw")},
			{Kind: wire.KindFile},
			{Kind: wire.KindListener, HasMeta: true, Meta: []byte{}},
			{Kind: wire.KindStream, HasMeta: true, Meta: []byte{0, 1, 2, 0xff}},
			{Kind: wire.KindPacket},
		}),
		Entry("metadata of 65536 bytes, the limit", []wire.Record{
			{Kind: wire.KindListener, HasMeta: true, Meta: bytes.Repeat([]byte{0xa5}, wire.MaxMetaSize)},
		}),
		Entry("252 records, the limit", func() []wire.Record {
			recs := make([]wire.Record, wire.MaxFdsPerBatch)
			for i := range recs {
				recs[i] = wire.Record{Kind: wire.Kind(i % 5), HasMeta: i%3 != 0, Meta: []byte(strings.Repeat("m", i%3*i))}
				if !recs[i].HasMeta {
					recs[i].Meta = nil
				}
			}
			return recs
		}()),
	)

	It("ParseBatch's records do not run into each other when appended to", func() {
		_, p := splitFrame(wire.AppendBatch(nil, []wire.Record{
			{Kind: wire.KindFile, HasMeta: true, Meta: []byte("first")},
			{Kind: wire.KindFile, HasMeta: true, Meta: []byte("second")},
		}))
		recs, err := wire.ParseBatch(p, 2)
		Expect(err).NotTo(HaveOccurred())
		_ = append(recs[0].Meta, "XXXXXXXXXXXX"...)
		Expect(string(recs[1].Meta)).To(Equal("second"))
	})
})

// rejectCase is an input that a parser must refuse, and the sentinel its
// error must match.
type rejectCase struct {
	input []byte
	want  error
}

// expectRejected checks that err is exactly the class asked for: one
// sentinel, not the other.
func expectRejected(err, want error) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred())
	Expect(errors.Is(err, want)).To(BeTrue(), "error %q is not %q", err, want)
	for _, other := range []error{wire.ErrMalformed, wire.ErrTooLarge} {
		if other != want {
			Expect(errors.Is(err, other)).To(BeFalse(), "error %q is also %q", err, other)
		}
	}
}

var _ = Describe("ParseHeader", func() {
	DescribeTable("accepts", func(b []byte, want wire.Header) {
		h, err := wire.ParseHeader(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(h).To(Equal(want))
	},
		Entry("HELLO", header(1, 0, 0, 12), wire.Header{Type: wire.TypeHello, Length: 12}),
		Entry("WELCOME", header(2, 0, 0, 2), wire.Header{Type: wire.TypeWelcome, Length: 2}),
		Entry("BATCH of 1 record", header(3, 0, 1, 6), wire.Header{Type: wire.TypeBatch, NFds: 1, Length: 6}),
		Entry("BATCH of 252 records", header(3, 0, 252, 252*6), wire.Header{Type: wire.TypeBatch, NFds: 252, Length: 252 * 6}),
		Entry("BATCH of 1 MiB, the limit", header(3, 0, 1, 1<<20), wire.Header{Type: wire.TypeBatch, NFds: 1, Length: 1 << 20}),
		Entry("END", header(4, 0, 0, 4), wire.Header{Type: wire.TypeEnd, Length: 4}),
		Entry("ACK", header(5, 0, 0, 4), wire.Header{Type: wire.TypeAck, Length: 4}),
		Entry("READY", header(6, 0, 0, 0), wire.Header{Type: wire.TypeReady}),
		Entry("ERROR without message", header(7, 0, 0, 4), wire.Header{Type: wire.TypeError, Length: 4}),
		Entry("ERROR with 1024-byte message", header(7, 0, 0, 1028), wire.Header{Type: wire.TypeError, Length: 1028}),
	)

	DescribeTable("rejects", func(c rejectCase) {
		_, err := wire.ParseHeader(c.input)
		expectRejected(err, c.want)
	},
		// FRM-2
		Entry("FRM-2: HELLO with flags 1", rejectCase{header(1, 1, 0, 12), wire.ErrMalformed}),
		Entry("FRM-2: WELCOME with flags 0x80", rejectCase{header(2, 0x80, 0, 2), wire.ErrMalformed}),
		Entry("FRM-2: BATCH with flags 2", rejectCase{header(3, 2, 1, 6), wire.ErrMalformed}),
		Entry("FRM-2: END with flags 0xff", rejectCase{header(4, 0xff, 0, 4), wire.ErrMalformed}),
		Entry("FRM-2: ACK with flags 4", rejectCase{header(5, 4, 0, 4), wire.ErrMalformed}),
		Entry("FRM-2: READY with flags 1", rejectCase{header(6, 1, 0, 0), wire.ErrMalformed}),
		Entry("FRM-2: ERROR with flags 1", rejectCase{header(7, 1, 0, 4), wire.ErrMalformed}),
		// FRM-3
		Entry("FRM-3: type 0", rejectCase{header(0, 0, 0, 0), wire.ErrMalformed}),
		Entry("FRM-3: type 8", rejectCase{header(8, 0, 0, 0), wire.ErrMalformed}),
		Entry("FRM-3: type 255", rejectCase{header(255, 0, 0, 4), wire.ErrMalformed}),
		Entry("FRM-3: HELLO with nfds 1", rejectCase{header(1, 0, 1, 12), wire.ErrMalformed}),
		Entry("FRM-3: WELCOME with nfds 1", rejectCase{header(2, 0, 1, 2), wire.ErrMalformed}),
		Entry("FRM-3: END with nfds 2", rejectCase{header(4, 0, 2, 4), wire.ErrMalformed}),
		Entry("FRM-3: ACK with nfds 0x100", rejectCase{header(5, 0, 0x100, 4), wire.ErrMalformed}),
		Entry("FRM-3: READY with nfds 1", rejectCase{header(6, 0, 1, 0), wire.ErrMalformed}),
		Entry("FRM-3: ERROR with nfds 1", rejectCase{header(7, 0, 1, 4), wire.ErrMalformed}),
		// RCV-2, as far as the header tells
		Entry("RCV-2: BATCH with nfds 0", rejectCase{header(3, 0, 0, 0), wire.ErrMalformed}),
		Entry("RCV-2: BATCH with nfds 0 and a payload", rejectCase{header(3, 0, 0, 6), wire.ErrMalformed}),
		Entry("RCV-2: BATCH with nfds 253", rejectCase{header(3, 0, 253, 253*6), wire.ErrMalformed}),
		Entry("RCV-2: BATCH with nfds 0xffff", rejectCase{header(3, 0, 0xffff, 1<<20), wire.ErrMalformed}),
		Entry("RCV-2: BATCH too short for its records", rejectCase{header(3, 0, 2, 11), wire.ErrMalformed}),
		Entry("RCV-2: BATCH of 252 records in 252*6-1 bytes", rejectCase{header(3, 0, 252, 252*6-1), wire.ErrMalformed}),
		// FRM-4: payload length
		Entry("FRM-4: HELLO of 11 bytes", rejectCase{header(1, 0, 0, 11), wire.ErrMalformed}),
		Entry("FRM-4: HELLO of 13 bytes", rejectCase{header(1, 0, 0, 13), wire.ErrMalformed}),
		Entry("FRM-4: WELCOME of 0 bytes", rejectCase{header(2, 0, 0, 0), wire.ErrMalformed}),
		Entry("FRM-4: WELCOME of 4 bytes", rejectCase{header(2, 0, 0, 4), wire.ErrMalformed}),
		Entry("FRM-4: END of 3 bytes", rejectCase{header(4, 0, 0, 3), wire.ErrMalformed}),
		Entry("FRM-4: END of 8 bytes", rejectCase{header(4, 0, 0, 8), wire.ErrMalformed}),
		Entry("FRM-4: ACK of 5 bytes", rejectCase{header(5, 0, 0, 5), wire.ErrMalformed}),
		Entry("FRM-4: READY of 1 byte", rejectCase{header(6, 0, 0, 1), wire.ErrMalformed}),
		Entry("FRM-4: ERROR of 3 bytes", rejectCase{header(7, 0, 0, 3), wire.ErrMalformed}),
		Entry("FRM-4: ERROR of 1029 bytes (message over 1024)", rejectCase{header(7, 0, 0, 1029), wire.ErrMalformed}),
		// FRM-4: the 1 MiB limit, before any payload is read
		Entry("FRM-4: BATCH of 1 MiB + 1", rejectCase{header(3, 0, 1, 1<<20+1), wire.ErrTooLarge}),
		Entry("FRM-4: BATCH of 4 GiB - 1", rejectCase{header(3, 0, 1, 0xffffffff), wire.ErrTooLarge}),
		Entry("FRM-4: ERROR of 1 MiB + 1", rejectCase{header(7, 0, 0, 1<<20+1), wire.ErrTooLarge}),
		Entry("FRM-4: HELLO of 2 MiB", rejectCase{header(1, 0, 0, 2<<20), wire.ErrTooLarge}),
	)
})

// record builds one BATCH record by hand.
func record(kind, rflags byte, metaLen uint32, meta ...byte) []byte {
	return append([]byte{kind, rflags,
		byte(metaLen >> 24), byte(metaLen >> 16), byte(metaLen >> 8), byte(metaLen)}, meta...)
}

var _ = Describe("ParseBatch", func() {
	It("decodes hand-written records", func() {
		p := cat(record(2, 0, 0), record(4, 1, 2, 'h', 'i'), record(0, 1, 0))
		recs, err := wire.ParseBatch(p, 3)
		Expect(err).NotTo(HaveOccurred())
		Expect(recs).To(HaveLen(3))
		Expect(recs[0]).To(Equal(wire.Record{Kind: wire.KindListener}))
		Expect(recs[1]).To(Equal(wire.Record{Kind: wire.KindPacket, HasMeta: true, Meta: []byte("hi")}))
		Expect(recs[2].HasMeta).To(BeTrue())
		Expect(recs[2].Meta).NotTo(BeNil())
		Expect(recs[2].Meta).To(BeEmpty())
	})

	It("into a slice reuses its storage and replaces what it held", func() {
		scratch := make([]wire.Record, 1, 8)
		scratch[0] = wire.Record{Kind: wire.KindFile}
		p := cat(record(2, 0, 0), record(4, 1, 2, 'h', 'i'))
		recs, err := wire.ParseBatchInto(scratch, p, 2)
		Expect(err).NotTo(HaveOccurred())
		want, err := wire.ParseBatch(p, 2)
		Expect(err).NotTo(HaveOccurred())
		Expect(recs).To(Equal(want))
		Expect(&recs[0]).To(BeIdenticalTo(&scratch[0]), "no new storage")
	})

	DescribeTable("rejects (RCV-2)", func(n int, c rejectCase) {
		recs, err := wire.ParseBatch(c.input, n)
		expectRejected(err, c.want)
		Expect(recs).To(BeNil())
	},
		Entry("unknown kind 5", 1, rejectCase{record(5, 0, 0), wire.ErrMalformed}),
		Entry("unknown kind 255", 1, rejectCase{record(255, 1, 1, 'x'), wire.ErrMalformed}),
		Entry("unknown kind in the second record", 2, rejectCase{cat(record(1, 0, 0), record(9, 0, 0)), wire.ErrMalformed}),
		Entry("unknown rflags bit 1", 1, rejectCase{record(1, 2, 0), wire.ErrMalformed}),
		Entry("unknown rflags bit 7", 1, rejectCase{record(1, 0x80, 0), wire.ErrMalformed}),
		Entry("HAS_META with an unknown bit", 1, rejectCase{record(1, 3, 1, 'x'), wire.ErrMalformed}),
		Entry("meta_length without HAS_META", 1, rejectCase{record(1, 0, 1, 'x'), wire.ErrMalformed}),
		Entry("meta_length over 65536", 1, rejectCase{record(3, 1, wire.MaxMetaSize+1, make([]byte, wire.MaxMetaSize+1)...), wire.ErrMalformed}),
		Entry("meta_length 2^32-1 in a short payload", 1, rejectCase{record(3, 1, 0xffffffff, 'x'), wire.ErrMalformed}),
		Entry("metadata runs past the payload", 1, rejectCase{record(3, 1, 5, 'a', 'b'), wire.ErrMalformed}),
		Entry("metadata runs past the payload in the last record", 2, rejectCase{cat(record(1, 0, 0), record(3, 1, 3, 'a')), wire.ErrMalformed}),
		Entry("payload too short for a record", 2, rejectCase{cat(record(1, 0, 0), []byte{1, 0, 0, 0, 0}), wire.ErrMalformed}),
		Entry("empty payload for one record", 1, rejectCase{nil, wire.ErrMalformed}),
		Entry("a byte after the last record", 1, rejectCase{cat(record(1, 0, 0), []byte{0}), wire.ErrMalformed}),
		Entry("a whole extra record", 1, rejectCase{cat(record(1, 0, 0), record(1, 0, 0)), wire.ErrMalformed}),
	)
})

var _ = Describe("payload parsers", func() {
	DescribeTable("ParseHello rejects", func(p []byte) {
		_, err := wire.ParseHello(p)
		expectRejected(err, wire.ErrMalformed)
	},
		Entry("wrong magic (NEG-2)", cat([]byte("GRACEFUX"), []byte{0, 1, 0, 1})),
		Entry("lower-case magic", cat([]byte("graceful"), []byte{0, 1, 0, 1})),
		Entry("11 bytes", cat([]byte("GRACEFUL"), []byte{0, 1, 0})),
		Entry("13 bytes", cat([]byte("GRACEFUL"), []byte{0, 1, 0, 1, 0})),
		Entry("empty", []byte{}),
	)

	DescribeTable("ParseWelcome rejects", func(p []byte) {
		_, err := wire.ParseWelcome(p)
		expectRejected(err, wire.ErrMalformed)
	},
		Entry("1 byte", []byte{1}),
		Entry("3 bytes", []byte{0, 1, 0}),
		Entry("empty", []byte{}),
	)

	DescribeTable("ParseCount rejects", func(p []byte) {
		_, err := wire.ParseCount(p)
		expectRejected(err, wire.ErrMalformed)
	},
		Entry("3 bytes", []byte{0, 0, 1}),
		Entry("5 bytes", []byte{0, 0, 0, 1, 0}),
		Entry("empty", []byte{}),
	)

	It("ParseError decodes a hand-written payload", func() {
		e, err := wire.ParseError([]byte{0x00, 0x04, 0x00, 0x03, 'b', 'i', 'g'})
		Expect(err).NotTo(HaveOccurred())
		Expect(e).To(Equal(wire.ErrorFrame{Code: wire.CodeTooLarge, Message: "big"}))
	})

	DescribeTable("ParseError rejects", func(p []byte) {
		_, err := wire.ParseError(p)
		expectRejected(err, wire.ErrMalformed)
	},
		Entry("3 bytes", []byte{0, 1, 0}),
		Entry("empty", []byte{}),
		Entry("message_length past the payload", []byte{0, 1, 0, 3, 'a', 'b'}),
		Entry("bytes after the message", []byte{0, 1, 0, 1, 'a', 'b'}),
		Entry("message_length little-endian", []byte{0, 1, 2, 0, 'a', 'b'}),
		Entry("message_length 1025", cat([]byte{0, 1, 0x04, 0x01}, bytes.Repeat([]byte{'x'}, 1025))),
	)
})

var _ = Describe("CheckRecord (SND-5)", func() {
	DescribeTable("accepts", func(r wire.Record) {
		Expect(wire.CheckRecord(r)).To(Succeed())
	},
		Entry("no metadata", wire.Record{Kind: wire.KindListener}),
		Entry("empty metadata", wire.Record{Kind: wire.KindRaw, HasMeta: true}),
		Entry("65536 bytes of metadata", wire.Record{Kind: wire.KindPacket, HasMeta: true, Meta: make([]byte, wire.MaxMetaSize)}),
	)

	DescribeTable("refuses", func(r wire.Record, want error) {
		expectRejected(wire.CheckRecord(r), want)
	},
		Entry("65537 bytes of metadata", wire.Record{Kind: wire.KindFile, HasMeta: true, Meta: make([]byte, wire.MaxMetaSize+1)}, wire.ErrTooLarge),
		Entry("metadata without HasMeta", wire.Record{Kind: wire.KindFile, Meta: []byte("x")}, wire.ErrMalformed),
		Entry("kind 5", wire.Record{Kind: 5}, wire.ErrMalformed),
	)
})

var _ = Describe("TypeSet", func() {
	It("holds the types given, and the zero set holds every type", func() {
		s := wire.TypesOf(wire.TypeAck, wire.TypeError)
		Expect(s.Has(wire.TypeAck)).To(BeTrue())
		Expect(s.Has(wire.TypeError)).To(BeTrue())
		Expect(s.Has(wire.TypeReady)).To(BeFalse())
		Expect(s.Has(wire.Type(0))).To(BeFalse())
		Expect(s.Has(wire.Type(200))).To(BeFalse())
		var all wire.TypeSet
		for t := wire.TypeHello; t <= wire.TypeError; t++ {
			Expect(all.Has(t)).To(BeTrue())
		}
	})

	It("names its types for error texts", func() {
		Expect(wire.TypesOf(wire.TypeBatch, wire.TypeEnd, wire.TypeError).String()).To(Equal("BATCH or END or ERROR"))
		Expect(wire.TypeSet(0).String()).To(Equal("any frame"))
	})
})

var _ = Describe("ParseHeaderIn", func() {
	It("is ParseHeader for a type allowed, and ErrMalformed naming the types due for another", func() {
		b := wire.AppendCount(nil, wire.TypeEnd, 3)
		h, err := wire.ParseHeaderIn(b, wire.TypesOf(wire.TypeBatch, wire.TypeEnd))
		Expect(err).NotTo(HaveOccurred())
		want, _ := wire.ParseHeader(b)
		Expect(h).To(Equal(want))
		_, err = wire.ParseHeaderIn(b, wire.TypesOf(wire.TypeWelcome, wire.TypeError))
		Expect(err).To(MatchError(wire.ErrMalformed))
		Expect(err).To(MatchError(ContainSubstring("END frame where WELCOME or ERROR was due")))
	})

	It("still says an unknown type is unknown", func() {
		_, err := wire.ParseHeaderIn([]byte{9, 0, 0, 0, 0, 0, 0, 0}, wire.TypesOf(wire.TypeHello))
		Expect(err).To(MatchError(ContainSubstring("unknown frame type 9")))
	})
})

var _ = Describe("ErrBadErrorFrame (ERR-3)", func() {
	DescribeTable("marks a broken ERROR header, keeping its class", func(b []byte, class error) {
		_, err := wire.ParseHeader(b)
		Expect(err).To(MatchError(wire.ErrBadErrorFrame))
		expectRejected(err, class)
	},
		Entry("flags", header(7, 1, 0, 4), wire.ErrMalformed),
		Entry("descriptors", header(7, 0, 1, 4), wire.ErrMalformed),
		Entry("message over 1024 bytes", header(7, 0, 0, 1029), wire.ErrMalformed),
		Entry("over 1 MiB", header(7, 0, 0, 1<<20+1), wire.ErrTooLarge),
	)

	DescribeTable("does not mark the broken header of another type", func(b []byte) {
		_, err := wire.ParseHeader(b)
		expectRejected(err, wire.ErrMalformed)
		Expect(err).NotTo(MatchError(wire.ErrBadErrorFrame))
	},
		Entry("BATCH with flags", header(3, 2, 1, 6)),
		Entry("END of 3 bytes", header(4, 0, 0, 3)),
		Entry("unknown type", header(9, 0, 0, 0)),
	)

	It("marks a broken ERROR payload", func() {
		_, err := wire.ParseError([]byte{0, 1, 0, 3, 'a'})
		Expect(err).To(MatchError(wire.ErrBadErrorFrame))
		expectRejected(err, wire.ErrMalformed)
	})
})

var _ = Describe("AppendError with a message that is not UTF-8", func() {
	It("cuts an over-long message with no rune start to nothing, and the frame stays valid", func() {
		msg := strings.Repeat("\x80", wire.MaxErrorText+10)
		_, p := splitFrame(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeRejected, Message: msg}))
		got, err := wire.ParseError(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(wire.ErrorFrame{Code: wire.CodeRejected}))
	})
})
