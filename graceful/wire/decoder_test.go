package wire_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// piece is one frame of a test stream and the descriptors that travel with
// its first byte (TRN-3).
type piece struct {
	frame []byte
	fds   []int
}

// decoded is a frame as the Decoder returned it, with its payload copied
// (the Decoder's payload is only valid until its next call).
type decoded struct {
	Header  wire.Header
	Payload []byte
	Fds     []int
}

// session is a whole sender-and-receiver exchange in one stream, with
// every frame type, two BATCH frames and their descriptors.
func session() []piece {
	return []piece{
		{frame: wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1})},
		{frame: wire.AppendWelcome(nil, 1)},
		{frame: wire.AppendBatch(nil, []wire.Record{
			{Kind: wire.KindListener, HasMeta: true, Meta: []byte("name=http")},
			{Kind: wire.KindPacket},
			{Kind: wire.KindFile, HasMeta: true, Meta: []byte{}},
		}), fds: []int{100, 101, 102}},
		{frame: wire.AppendBatch(nil, []wire.Record{
			{Kind: wire.KindStream},
			{Kind: wire.KindRaw, HasMeta: true, Meta: []byte("x")},
		}), fds: []int{103, 104}},
		{frame: wire.AppendCount(nil, wire.TypeEnd, 5)},
		{frame: wire.AppendCount(nil, wire.TypeAck, 5)},
		{frame: wire.AppendReady(nil)},
		{frame: wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}}), fds: []int{105}},
		{frame: wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeRejected, Message: "no"})},
	}
}

// expectedFrames is what decoding pieces must give.
func expectedFrames(pieces []piece) []decoded {
	var want []decoded
	for _, p := range pieces {
		h, err := wire.ParseHeader(p.frame)
		Expect(err).NotTo(HaveOccurred())
		want = append(want, decoded{Header: h, Payload: p.frame[wire.HeaderSize:], Fds: p.fds})
	}
	return want
}

// chunk is what one read returns: bytes and the descriptors that came with
// them.
type chunk struct {
	data []byte
	fds  []int
}

// chunks cuts the stream of pieces at the given offsets. The descriptors of
// a frame go with the chunk that holds the frame's first byte, as the
// kernel delivers them.
func chunks(pieces []piece, cuts []int) []chunk {
	var stream []byte
	fdsAt := map[int][]int{}
	for _, p := range pieces {
		if p.fds != nil {
			fdsAt[len(stream)] = p.fds
		}
		stream = append(stream, p.frame...)
	}
	var out []chunk
	start := 0
	for _, end := range append(cuts, len(stream)) {
		c := chunk{data: stream[start:end]}
		for off := start; off < end; off++ {
			c.fds = append(c.fds, fdsAt[off]...)
		}
		out = append(out, c)
		start = end
	}
	return out
}

// feed gives the chunks to a Decoder one by one, half through Write and
// half through Space and Commit, taking every complete frame after each.
// It stops at the first error.
func feed(d *wire.Decoder, cs []chunk) ([]decoded, error) {
	var got []decoded
	for i, c := range cs {
		if i%2 == 0 {
			d.Write(c.data)
		} else {
			d.Commit(copy(d.Space(len(c.data)), c.data))
		}
		if c.fds != nil {
			d.AddFds(c.fds)
		}
		more, err := drain(d)
		got = append(got, more...)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

// drain takes every complete frame from d.
func drain(d *wire.Decoder) ([]decoded, error) {
	var got []decoded
	for {
		f, ok, err := d.Next()
		if err != nil || !ok {
			return got, err
		}
		if f.Header.Type != wire.TypeBatch && f.Fds != nil {
			return got, fmt.Errorf("%v frame took descriptors %v", f.Header.Type, f.Fds)
		}
		got = append(got, decoded{Header: f.Header, Payload: bytes.Clone(f.Payload), Fds: slices.Clone(f.Fds)})
	}
}

// equalFrames compares without reflection, for loops over many cuts.
func equalFrames(a, b []decoded) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Header != b[i].Header || !bytes.Equal(a[i].Payload, b[i].Payload) || !slices.Equal(a[i].Fds, b[i].Fds) {
			return false
		}
	}
	return true
}

// mustFeed is feed for streams that must decode without error.
func mustFeed(d *wire.Decoder, cs []chunk) []decoded {
	GinkgoHelper()
	got, err := feed(d, cs)
	Expect(err).NotTo(HaveOccurred())
	return got
}

// mustDrain is drain for streams that must decode without error.
func mustDrain(d *wire.Decoder) []decoded {
	GinkgoHelper()
	got, err := drain(d)
	Expect(err).NotTo(HaveOccurred())
	return got
}

var _ = Describe("Decoder", func() {
	var d *wire.Decoder
	BeforeEach(func() { d = new(wire.Decoder) })

	It("returns the frames of a stream written in one piece", func() {
		got := mustFeed(d, chunks(session(), nil))
		Expect(got).To(Equal(expectedFrames(session())))
		Expect(d.Buffered()).To(BeZero())
		Expect(d.Queued()).To(BeZero())
		Expect(d.TakeFds()).To(BeEmpty())
	})

	It("returns the same frames and descriptors however the stream is cut in two (TRN-2, RCV-1)", func() {
		want := expectedFrames(session())
		total := len(chunks(session(), nil)[0].data)
		for cut := 1; cut < total; cut++ {
			d := new(wire.Decoder)
			got, err := feed(d, chunks(session(), []int{cut}))
			Expect(err).NotTo(HaveOccurred(), "cut at %d", cut)
			Expect(got).To(Equal(want), "cut at %d", cut)
			Expect(d.Buffered()).To(BeZero(), "cut at %d", cut)
			Expect(d.Queued()).To(BeZero(), "cut at %d", cut)
		}
	})

	It("returns the same frames and descriptors however the stream is cut in three", func() {
		want := expectedFrames(session())
		total := len(chunks(session(), nil)[0].data)
		for i := 1; i < total; i++ {
			for j := i + 1; j < total; j++ {
				d := new(wire.Decoder)
				got, err := feed(d, chunks(session(), []int{i, j}))
				if err != nil || !equalFrames(got, want) || d.Queued() != 0 || d.Buffered() != 0 {
					Expect(err).NotTo(HaveOccurred(), "cuts at %d and %d", i, j)
					Expect(got).To(Equal(want), "cuts at %d and %d", i, j)
					Expect(d.Queued()).To(BeZero(), "cuts at %d and %d", i, j)
					Expect(d.Buffered()).To(BeZero(), "cuts at %d and %d", i, j)
				}
			}
		}
	})

	It("returns the same frames when every byte comes in its own read", func() {
		want := expectedFrames(session())
		total := len(chunks(session(), nil)[0].data)
		var cuts []int
		for i := 1; i < total; i++ {
			cuts = append(cuts, i)
		}
		Expect(mustFeed(d, chunks(session(), cuts))).To(Equal(want))
		Expect(d.Buffered()).To(BeZero())
	})

	It("assigns descriptors that arrive early, with bytes of earlier frames (RCV-1)", func() {
		// All six descriptors come with the first byte of the stream, as
		// with SND-4 (WELCOME, BATCH and END in one sendmsg), but cut
		// anywhere.
		pieces := session()
		stream := chunks(pieces, nil)[0].data
		want := expectedFrames(pieces)
		for cut := 1; cut < len(stream); cut++ {
			d := new(wire.Decoder)
			d.AddFds([]int{100, 101, 102, 103, 104, 105})
			got, err := feed(d, []chunk{{data: stream[:cut]}, {data: stream[cut:]}})
			Expect(err).NotTo(HaveOccurred(), "cut at %d", cut)
			Expect(got).To(Equal(want), "cut at %d", cut)
		}
	})

	It("leaves descriptors queued past a frame that carries none", func() {
		welcome := wire.AppendWelcome(nil, 1)
		batch := wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}, {Kind: wire.KindFile}})
		d.Write(welcome)
		d.Write(batch[:3])
		d.AddFds([]int{7, 8})
		got := mustDrain(d)
		Expect(got).To(HaveLen(1))
		Expect(got[0].Header.Type).To(Equal(wire.TypeWelcome))
		Expect(got[0].Fds).To(BeNil())
		Expect(d.Queued()).To(Equal(2))
		d.Write(batch[3:])
		got = mustDrain(d)
		Expect(got).To(HaveLen(1))
		Expect(got[0].Fds).To(Equal([]int{7, 8}))
		Expect(d.Queued()).To(BeZero())
	})

	It("allocates nothing for a stream of batches once its buffers have grown", func() {
		recs := make([]wire.Record, wire.MaxFdsPerBatch)
		for i := range recs {
			recs[i] = wire.Record{Kind: wire.KindFile}
		}
		var stream []byte
		fds := make([]int, 4*wire.MaxFdsPerBatch)
		for range 4 {
			stream = wire.AppendBatch(stream, recs)
		}
		decodeAll := func() {
			d.Reset()
			d.Write(stream)
			d.AddFds(fds)
			for n := 0; n < 4; n++ {
				f, ok, err := d.Next()
				if err != nil || !ok || len(f.Fds) != wire.MaxFdsPerBatch {
					Fail(fmt.Sprintf("batch %d: ok %v, %d descriptors, %v", n, ok, len(f.Fds), err))
				}
			}
		}
		decodeAll()
		Expect(testing.AllocsPerRun(20, decodeAll)).To(BeZero())
	})

	It("does not share a returned frame's descriptors with its queue", func() {
		d.Write(wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}}))
		d.AddFds([]int{1, 2})
		f, ok, err := d.Next()
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue())
		f.Fds[0] = -1
		Expect(d.TakeFds()).To(Equal([]int{2}))
		d.AddFds([]int{3})
		Expect(f.Fds).To(Equal([]int{-1}))
	})

	It("needs a whole header, and a whole payload, before it returns a frame", func() {
		ready := wire.AppendCount(nil, wire.TypeEnd, 3)
		for i := 0; i < len(ready); i++ {
			_, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse(), "frame returned after %d of %d bytes", i, len(ready))
			Expect(d.Buffered()).To(Equal(i))
			d.Write(ready[i : i+1])
		}
		f, ok, err := d.Next()
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue())
		Expect(f.Payload).To(Equal([]byte{0, 0, 0, 3}))
	})

	Describe("Need", func() {
		It("counts the bytes missing from the header, then from the payload", func() {
			end := wire.AppendCount(nil, wire.TypeEnd, 3)
			Expect(d.Need()).To(Equal(8))
			d.Write(end[:3])
			Expect(d.Need()).To(Equal(5))
			d.Write(end[3:8])
			Expect(d.Need()).To(Equal(4))
			d.Write(end[8:10])
			Expect(d.Need()).To(Equal(2))
			d.Write(end[10:])
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Header.Type).To(Equal(wire.TypeEnd))
			Expect(d.Need()).To(Equal(8))
		})

		It("lets a reader take a stream exactly frame by frame, never reading past one", func() {
			pieces := session()
			var stream []byte
			fdsAt := map[int][]int{}
			for _, p := range pieces {
				fdsAt[len(stream)] = p.fds
				stream = append(stream, p.frame...)
			}
			var got []decoded
			for fed := 0; fed < len(stream); {
				n := d.Need()
				Expect(n).To(BeNumerically(">", 0))
				Expect(fed+n).To(BeNumerically("<=", len(stream)), "Need asks for bytes past the stream's last frame")
				d.Write(stream[fed : fed+n])
				for off := fed; off < fed+n; off++ {
					d.AddFds(fdsAt[off])
				}
				fed += n
				f, ok, err := d.Next()
				Expect(err).NotTo(HaveOccurred())
				if ok {
					Expect(d.Buffered()).To(BeZero(), "bytes of the next frame were read with %v", f.Header)
					got = append(got, decoded{Header: f.Header, Payload: bytes.Clone(f.Payload), Fds: slices.Clone(f.Fds)})
				}
			}
			Expect(got).To(Equal(expectedFrames(pieces)))
		})

		It("asks for at least one byte behind a bad header, so that the reader goes on to the error", func() {
			d.Write(header(6, 1, 0, 0))
			Expect(d.Need()).To(BeNumerically(">=", 1))
			_, _, err := d.Next()
			expectRejected(err, wire.ErrMalformed)
		})
	})

	Describe("checks a header as soon as its 8 bytes are in (FRM-4)", func() {
		DescribeTable("before any payload", func(h []byte, want error) {
			d.Write(h[:7])
			_, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred(), "a header was judged before it was whole")
			Expect(ok).To(BeFalse())
			d.Write(h[7:])
			_, ok, err = d.Next()
			expectRejected(err, want)
			Expect(ok).To(BeFalse())
		},
			Entry("length over 1 MiB", header(3, 0, 1, 1<<20+1), wire.ErrTooLarge),
			Entry("flags", header(6, 1, 0, 0), wire.ErrMalformed),
			Entry("unknown type", header(9, 0, 0, 0), wire.ErrMalformed),
			Entry("nfds on END", header(4, 0, 1, 4), wire.ErrMalformed),
			Entry("BATCH with nfds 253", header(3, 0, 253, 253*6), wire.ErrMalformed),
		)

		It("accepts a 1 MiB BATCH header and waits for its payload", func() {
			d.Write(header(3, 0, 1, 1<<20))
			d.AddFds([]int{5})
			_, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse())
		})

		It("rejects a malformed frame after good ones, once they are taken", func() {
			d.Write(wire.AppendReady(nil))
			d.Write(header(6, 0, 0, 1))
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Header.Type).To(Equal(wire.TypeReady))
			_, _, err = d.Next()
			expectRejected(err, wire.ErrMalformed)
		})
	})

	Describe("with the types that may come at a point of the session (Expect, FRM-3)", func() {
		It("refuses a frame of another type from its header, before its payload", func() {
			d.Expect(wire.TypesOf(wire.TypeHello, wire.TypeError))
			d.Write(header(3, 0, 1, 1<<20))
			_, ok, err := d.Next()
			expectRejected(err, wire.ErrMalformed)
			Expect(ok).To(BeFalse())
			Expect(err).To(MatchError(ContainSubstring("BATCH frame where HELLO or ERROR was due")))
		})

		It("judges the type before nfds and length, in FRM-4's order, and flags before the type", func() {
			d.Expect(wire.TypesOf(wire.TypeAck))
			d.Write(header(3, 0, 300, 1<<20+1)) // a BATCH over both limits
			_, _, err := d.Next()
			Expect(err).To(MatchError(ContainSubstring("BATCH frame where ACK was due")))

			var e wire.Decoder
			e.Expect(wire.TypesOf(wire.TypeAck))
			e.Write(header(3, 1, 0, 0))
			_, _, err = e.Next()
			Expect(err).To(MatchError(ContainSubstring("flags")))
		})

		It("takes the types allowed, and any type again after Reset", func() {
			d.Expect(wire.TypesOf(wire.TypeAck, wire.TypeError))
			d.Write(wire.AppendCount(nil, wire.TypeAck, 1))
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Header.Type).To(Equal(wire.TypeAck))
			d.Reset()
			d.Write(wire.AppendReady(nil))
			_, ok, err = d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
		})

		It("makes Need ask for one byte behind a frame of a type not allowed", func() {
			d.Expect(wire.TypesOf(wire.TypeWelcome))
			d.Write(wire.AppendCount(nil, wire.TypeEnd, 1)[:8])
			Expect(d.Need()).To(Equal(1))
		})
	})

	Describe("Peek", func() {
		It("shows the next header once its 8 bytes are in, checked, without taking the frame", func() {
			b := wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}})
			d.Write(b[:7])
			_, ok, err := d.Peek()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse())
			d.Write(b[7:8])
			h, ok, err := d.Peek()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(h).To(Equal(wire.Header{Type: wire.TypeBatch, NFds: 1, Length: wire.RecordOverhead}))
			Expect(d.Buffered()).To(Equal(8))
			d.Write(b[8:])
			d.AddFds([]int{7})
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Fds).To(Equal([]int{7}))
		})

		It("reports a header the rules or Expect refuse", func() {
			d.Write(header(9, 0, 0, 0))
			_, ok, err := d.Peek()
			expectRejected(err, wire.ErrMalformed)
			Expect(ok).To(BeFalse())

			var e wire.Decoder
			e.Expect(wire.TypesOf(wire.TypeHello))
			e.Write(wire.AppendReady(nil))
			_, _, err = e.Peek()
			expectRejected(err, wire.ErrMalformed)
		})
	})

	Describe("RCV-2: a complete BATCH without its descriptors", func() {
		batch := wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}, {Kind: wire.KindFile}, {Kind: wire.KindFile}})

		It("is not judged while the frame is incomplete", func() {
			d.Write(batch[:len(batch)-1])
			d.AddFds([]int{10, 11})
			_, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse())
		})

		It("fails once complete, and TakeFds returns exactly the queued descriptors", func() {
			d.AddFds([]int{10, 11})
			d.Write(batch)
			f, ok, err := d.Next()
			expectRejected(err, wire.ErrMalformed)
			Expect(ok).To(BeFalse())
			Expect(f.Fds).To(BeNil())
			Expect(d.TakeFds()).To(Equal([]int{10, 11}))
			Expect(d.Queued()).To(BeZero())
			Expect(d.TakeFds()).To(BeEmpty())
		})

		It("fails for the second BATCH when the first took the descriptors", func() {
			one := wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}})
			d.Write(one)
			d.AddFds([]int{10})
			d.Write(one)
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Fds).To(Equal([]int{10}))
			_, _, err = d.Next()
			expectRejected(err, wire.ErrMalformed)
			Expect(d.TakeFds()).To(BeEmpty())
		})
	})

	Describe("RCV-3: more than 252 descriptors queued", func() {
		fds := func(from, n int) []int {
			s := make([]int, n)
			for i := range s {
				s[i] = from + i
			}
			return s
		}

		It("accepts 252 queued with no frame to take them", func() {
			d.AddFds(fds(1000, 252))
			_, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse())
		})

		It("fails on 253 queued with no bytes at all, and gives them all back", func() {
			d.AddFds(fds(1000, 253))
			_, ok, err := d.Next()
			expectRejected(err, wire.ErrMalformed)
			Expect(ok).To(BeFalse())
			Expect(d.TakeFds()).To(Equal(fds(1000, 253)))
		})

		It("fails on 253 queued behind a partial frame", func() {
			batch := wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}})
			d.Write(batch[:4])
			d.AddFds(fds(1000, 253))
			_, _, err := d.Next()
			expectRejected(err, wire.ErrMalformed)
			Expect(d.TakeFds()).To(Equal(fds(1000, 253)))
		})

		It("counts only after the complete frames have taken theirs", func() {
			one := wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}})
			d.Write(one)
			d.AddFds(fds(1000, 253))
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred(), "253 queued, but the complete BATCH takes one")
			Expect(ok).To(BeTrue())
			Expect(f.Fds).To(Equal([]int{1000}))
			_, ok, err = d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeFalse())
			Expect(d.Queued()).To(Equal(252))
		})

		It("fails when 253 remain after the complete frames", func() {
			one := wire.AppendBatch(nil, []wire.Record{{Kind: wire.KindFile}})
			d.Write(one)
			d.AddFds(fds(1000, 254))
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Fds).To(Equal([]int{1000}))
			_, _, err = d.Next()
			expectRejected(err, wire.ErrMalformed)
			Expect(d.TakeFds()).To(Equal(fds(1001, 253)))
		})
	})

	Describe("its buffer", func() {
		It("gives at least the space asked for, and Commit adds exactly what was written", func() {
			for _, size := range []int{1, 7, 8, 100, 16 << 10} {
				d := new(wire.Decoder)
				d.Write([]byte{6, 0, 0})
				s := d.Space(size)
				Expect(len(s)).To(BeNumerically(">=", size))
				// Bytes past what is committed must not count.
				rest := []byte{0, 0, 0, 0, 0, 0xee, 0xee}
				n := copy(s, rest)
				d.Commit(min(n, 5))
				if n < 5 {
					d.Write(rest[n:5])
				}
				Expect(d.Buffered()).To(Equal(8))
				f, ok, err := d.Next()
				Expect(err).NotTo(HaveOccurred())
				Expect(ok).To(BeTrue())
				Expect(f.Header.Type).To(Equal(wire.TypeReady))
				Expect(d.Buffered()).To(BeZero())
			}
		})

		It("keeps the unread bytes when it compacts or grows", func() {
			// A frame whose end shares the buffer with the start of the next,
			// then a request for more room than is left.
			err1 := wire.AppendError(nil, wire.ErrorFrame{Code: 1, Message: "first"})
			err2 := wire.AppendError(nil, wire.ErrorFrame{Code: 2, Message: "second frame, longer"})
			stream := append(bytes.Clone(err1), err2...)
			cut := len(err1) + 5
			d.Write(stream[:cut])
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Payload).To(Equal(err1[wire.HeaderSize:]))
			for _, size := range []int{1, 64, 4096} {
				Expect(len(d.Space(size))).To(BeNumerically(">=", size))
			}
			d.Write(stream[cut:])
			f, ok, err = d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Payload).To(Equal(err2[wire.HeaderSize:]))
		})

		// The next three read the buffer's place in memory through the
		// slices Space returns: how much it copies and allocates is part
		// of what it is for.
		It("hands out the free tail as it is when it holds exactly the room asked for", func() {
			s := d.Space(32)
			n := len(s)
			end := wire.AppendCount(nil, wire.TypeEnd, 7)
			d.Write(wire.AppendReady(nil))
			d.Write(end)
			_, ok, err := d.Next() // READY: its bytes could make room
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			used := wire.HeaderSize + len(end)
			r := d.Space(n - used)
			Expect(len(r)).To(Equal(n - used))
			Expect(&r[0]).To(BeIdenticalTo(&s[used]), "the unread bytes moved")
		})

		It("starts over at the front of its buffer once every byte is taken", func() {
			s := d.Space(32)
			n := len(s)
			d.Write(wire.AppendReady(nil))
			_, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			r := d.Space(1)
			Expect(len(r)).To(Equal(n))
			Expect(&r[0]).To(BeIdenticalTo(&s[0]))
		})

		It("moves the unread bytes to the front, in place, when that makes exactly the room asked for", func() {
			s := d.Space(32)
			n := len(s)
			end := wire.AppendCount(nil, wire.TypeEnd, 7)
			d.Write(wire.AppendReady(nil))
			d.Write(end)
			f, ok, err := d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Header.Type).To(Equal(wire.TypeReady))
			// len(end) bytes unread, n-len(end) free once they move.
			r := d.Space(n - len(end))
			Expect(len(r)).To(Equal(n - len(end)))
			Expect(&r[0]).To(BeIdenticalTo(&s[len(end)]), "the buffer was not reused")
			Expect(s[:len(end)]).To(Equal(end))
			f, ok, err = d.Next()
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(f.Payload).To(Equal(end[wire.HeaderSize:]))
		})

		It("grows geometrically: a frame near 1 MiB read in small pieces is not copied once per read", func() {
			// As the receiver reads: Space(16 KiB) before each read, a
			// short read into it. Growing by exactly what is asked copies
			// the whole buffer on every read, quadratic in the frame size.
			recs := make([]wire.Record, 15)
			for i := range recs {
				recs[i] = wire.Record{Kind: wire.KindFile, HasMeta: true, Meta: make([]byte, wire.MaxMetaSize)}
			}
			frame := wire.AppendBatch(nil, recs)
			const readSize, piece = 16 << 10, 4096
			allocs := testing.AllocsPerRun(1, func() {
				d := new(wire.Decoder)
				for off := 0; off < len(frame); off += piece {
					n := copy(d.Space(readSize), frame[off:min(off+piece, len(frame))])
					d.Commit(n)
				}
			})
			// About log2(1 MiB / 16 KiB) when doubling; one per read is 241.
			Expect(allocs).To(BeNumerically("<=", 20), "allocations for %d bytes in %d-byte reads", len(frame), piece)
		})
	})
})
