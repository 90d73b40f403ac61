package wire_test

import (
	"bytes"
	"runtime"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// u32 is a big-endian uint32, written by hand.
func u32(n uint32) []byte {
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// text is a length-prefixed string of the metadata encoding.
func text(s string) []byte {
	return cat(u32(uint32(len(s))), []byte(s))
}

// metaKeys walks an encoding that ParseMeta accepted and returns its keys
// in the order they appear.
func metaKeys(p []byte) []string {
	n := int(p[0])<<24 | int(p[1])<<16 | int(p[2])<<8 | int(p[3])
	p = p[4:]
	var keys []string
	for range n {
		l := int(p[0])<<24 | int(p[1])<<16 | int(p[2])<<8 | int(p[3])
		keys = append(keys, string(p[4:4+l]))
		p = p[4+l:]
		l = int(p[0])<<24 | int(p[1])<<16 | int(p[2])<<8 | int(p[3])
		p = p[4+l:]
	}
	return keys
}

var _ = Describe("metadata encoding (section 5)", func() {
	It("lays out pairs big-endian, keys sorted by their bytes (META-1)", func() {
		m := map[string]string{"b": "2", "a": "1"}
		b := appended(func(b []byte) []byte { return wire.AppendMeta(b, m) })
		Expect(b).To(Equal([]byte{
			0, 0, 0, 2,
			0, 0, 0, 1, 'a',
			0, 0, 0, 1, '1',
			0, 0, 0, 1, 'b',
			0, 0, 0, 1, '2',
		}))
		Expect(wire.MetaSize(m)).To(Equal(len(b)))
	})

	It("encodes lengths over 255 on four bytes", func() {
		v := strings.Repeat("v", 0x0102)
		Expect(wire.AppendMeta(nil, map[string]string{"k": v})).To(Equal(cat(
			[]byte{0, 0, 0, 1},
			[]byte{0, 0, 0, 1, 'k'},
			[]byte{0, 0, 0x01, 0x02}, []byte(v))))
	})

	It("sorts by bytes, not by letters", func() {
		m := map[string]string{"é": "", "a": "", "B": "", "aa": "", "": "", "Z": "", "ab": ""}
		b := wire.AppendMeta(nil, m)
		Expect(metaKeys(b)).To(Equal([]string{"", "B", "Z", "a", "aa", "ab", "é"}))
	})

	DescribeTable("round trips", func(m map[string]string) {
		b := wire.AppendMeta(nil, m)
		Expect(b).To(HaveLen(wire.MetaSize(m)))
		got, err := wire.ParseMeta(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(m))
		// The encoding is canonical: the same map always gives the same bytes.
		Expect(wire.AppendMeta(nil, got)).To(Equal(b))
	},
		Entry("no pairs", map[string]string{}),
		Entry("one pair", map[string]string{"name": "http"}),
		Entry("empty key and value", map[string]string{"": ""}),
		Entry("UTF-8", map[string]string{"clé": "valeur ✓", "日本": "語"}),
		Entry("many keys", func() map[string]string {
			m := map[string]string{}
			for i := range 100 {
				m[strings.Repeat("k", i)] = strings.Repeat("v", 100-i)
			}
			return m
		}()),
	)

	It("decodes a nil map's encoding to an empty map", func() {
		b := wire.AppendMeta(nil, nil)
		Expect(b).To(Equal([]byte{0, 0, 0, 0}))
		got, err := wire.ParseMeta(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(BeEmpty())
	})

	It("accepts keys in any order (sorting is a SHOULD for encoders)", func() {
		got, err := wire.ParseMeta(cat(u32(2), text("b"), text("2"), text("a"), text("1")))
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(map[string]string{"a": "1", "b": "2"}))
	})

	DescribeTable("rejects (META-2)", func(p []byte) {
		got, err := wire.ParseMeta(p)
		expectRejected(err, wire.ErrMalformed)
		Expect(got).To(BeNil())
	},
		Entry("empty", []byte{}),
		Entry("3 bytes", []byte{0, 0, 0}),
		Entry("more pairs than bytes", u32(1)),
		Entry("2^32-1 pairs", cat(u32(0xffffffff), text("a"), text("b"))),
		Entry("one pair fewer than counted", cat(u32(2), text("a long key"), text("1"))),
		Entry("key length past the end", cat(u32(1), u32(5), []byte("abc"), u32(0))),
		Entry("key length 2^32-1", cat(u32(1), u32(0xffffffff), u32(0))),
		Entry("value length past the end", cat(u32(1), text("k"), u32(2), []byte("v"))),
		Entry("value length field cut", cat(u32(1), text("k"), []byte{0, 0})),
		Entry("value length field missing", cat(u32(2), text("k"), text("v"), text("l"))),
		Entry("a byte after the last pair", cat(u32(1), text("k"), text("v"), []byte{0})),
		Entry("a whole pair after the last", cat(u32(1), text("k"), text("v"), text("x"), text("y"))),
		Entry("bytes after zero pairs", cat(u32(0), []byte{0})),
		Entry("repeated key", cat(u32(2), text("k"), text("1"), text("k"), text("2"))),
		Entry("repeated key, same value", cat(u32(3), text("a"), text(""), text("k"), text("v"), text("k"), text("v"))),
		Entry("repeated empty key", cat(u32(2), text(""), text(""), text(""), text(""))),
		Entry("key not UTF-8", cat(u32(1), text("\xff"), text("v"))),
		Entry("key with a cut rune", cat(u32(1), text("caf\xc3"), text("v"))),
		Entry("value not UTF-8", cat(u32(1), text("k"), text("\xc0\x80"))),
		Entry("surrogate in the value", cat(u32(1), text("k"), text("\xed\xa0\x80"))),
	)

	It("does not read past the end of the metadata it is given", func() {
		// The backing array holds the bytes that would complete the value:
		// a decoder that looked past len(p) would accept it.
		whole := cat(u32(1), text("k"), text("value"))
		p := whole[:len(whole)-2]
		got, err := wire.ParseMeta(p)
		expectRejected(err, wire.ErrMalformed)
		Expect(got).To(BeNil())
		Expect(bytes.HasPrefix(whole, p)).To(BeTrue())
	})

	It("refuses a pair count the bytes cannot hold before making room for it", func() {
		// 2^18 pairs need at least 2 MiB; 32 KiB are there. A decoder that
		// trusted the count would size its map for it first.
		p := cat(u32(1<<18), make([]byte, 32<<10))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got, err := wire.ParseMeta(p)
		runtime.ReadMemStats(&after)
		expectRejected(err, wire.ErrMalformed)
		Expect(got).To(BeNil())
		Expect(after.TotalAlloc-before.TotalAlloc).To(BeNumerically("<", 256<<10), "bytes allocated")
	})
})
