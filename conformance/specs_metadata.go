package conformance

import (
	"encoding/binary"

	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// kvSample is key-value metadata whose keys are not in insertion order.
var kvSample = map[string]string{"name": "http", "addr": "127.0.0.1:80", "é": "ü", "": "empty key"}

// goodKV are encodings a key-value decoder must accept (META-2): keys in
// any order, and no pairs.
var goodKV = []struct {
	name string
	enc  []byte
	want map[string]string
}{
	{"keys out of order", func() []byte {
		b := binary.BigEndian.AppendUint32(nil, 2)
		for _, kv := range [][2]string{{"zz", "1"}, {"aa", "2"}} {
			b = binary.BigEndian.AppendUint32(b, uint32(len(kv[0])))
			b = append(b, kv[0]...)
			b = binary.BigEndian.AppendUint32(b, uint32(len(kv[1])))
			b = append(b, kv[1]...)
		}
		return b
	}(), map[string]string{"zz": "1", "aa": "2"}},
	{"no pairs", []byte{0, 0, 0, 0}, map[string]string{}},
}

// badKV are encodings a key-value decoder must reject (META-2).
var badKV = []struct {
	name string
	enc  []byte
}{
	{"a key length running past the end", func() []byte {
		b := binary.BigEndian.AppendUint32(nil, 1)
		b = binary.BigEndian.AppendUint32(b, 10)
		return append(b, "ab"...)
	}()},
	{"a byte left over after the last pair", append(wire.AppendMeta(nil, map[string]string{"a": "1"}), 0)},
	{"a repeated key", func() []byte {
		b := binary.BigEndian.AppendUint32(nil, 2)
		for _, v := range []string{"1", "2"} {
			b = binary.BigEndian.AppendUint32(b, 1)
			b = append(b, 'a')
			b = binary.BigEndian.AppendUint32(b, 1)
			b = append(b, v...)
		}
		return b
	}()},
	{"no bytes at all (the pair count is missing)", []byte{}},
	{"a key that is not UTF-8", func() []byte {
		b := binary.BigEndian.AppendUint32(nil, 1)
		b = binary.BigEndian.AppendUint32(b, 1)
		b = append(b, 0xff)
		return binary.BigEndian.AppendUint32(b, 0)
	}()},
	{"a value length running past the end", func() []byte {
		b := binary.BigEndian.AppendUint32(nil, 1)
		b = binary.BigEndian.AppendUint32(b, 1)
		b = append(b, 'k')
		b = binary.BigEndian.AppendUint32(b, 10)
		return append(b, "ab"...)
	}()},
	{"a value that is not UTF-8", func() []byte {
		b := binary.BigEndian.AppendUint32(nil, 1)
		b = binary.BigEndian.AppendUint32(b, 1)
		b = append(b, 'k')
		b = binary.BigEndian.AppendUint32(b, 2)
		return append(b, 0xc3, 0x28)
	}()},
	{"a pair count larger than the pairs present", func() []byte {
		b := wire.AppendMeta(nil, map[string]string{"a": "1"})
		binary.BigEndian.PutUint32(b, 2)
		return b
	}()},
}

func metadataSpecs(e *env) {
	e.describe("the implementation as sender", iut("sender"), func() {
		e.describe("key-value metadata", func() {
			run := e.lazySender(senderScenario{fixtures: one, kv: true,
				serve: func(r *senderRun) []map[string]any {
					d := r.serveDescriptors()
					d[0]["meta"], d[0]["kv"] = nil, kvSample
					return d
				},
				script: goodOne})
			e.verify("is encoded as section 5 says, keys sorted by their bytes", "META-1", func() {
				r := run()
				r.mustServe()
				l := r.session(0)
				r.expectWholeSet(l)
				Expect(l.records[0].HasMeta).To(BeTrue(), r.transcript())
				Expect(l.records[0].Meta).To(Equal(wire.AppendMeta(nil, kvSample)), r.transcript())
			})
		})
	})

	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.describe("key-value metadata, good and bad", func() {
			run := e.lazyReceiver(receiverScenario{kv: true, script: (*senderScript).wholeSession,
				fixtures: func() (fixtureSet, error) {
					s, err := fileSet(2 + len(goodKV) + len(badKV))
					if err != nil {
						return nil, err
					}
					s[0].withMeta(wire.AppendMeta(nil, kvSample))
					s[1].noMeta()
					for i, g := range goodKV {
						s[2+i].withMeta(g.enc)
					}
					for i, b := range badKV {
						s[2+len(goodKV)+i].withMeta(b.enc)
					}
					return s, nil
				}})
			total := 2 + len(goodKV) + len(badKV)
			e.verify("decodes the encoding of section 5", "META-1", func() {
				r := run()
				r.mustRun()
				Expect(r.reply.Descriptors).To(HaveLen(total), r.transcript())
				d := r.reply.Descriptors[0]
				Expect(d.KVError).To(Or(BeNil(), HaveValue(BeEmpty())), r.transcript())
				Expect(d.KV).NotTo(BeNil(), r.transcript())
				Expect(*d.KV).To(Equal(kvSample), r.transcript())
			})
			e.verify("accepts keys in any order and no pairs, and rejects a bad encoding with an error", "META-2", func() {
				r := run()
				r.mustRun()
				Expect(r.reply.Descriptors).To(HaveLen(total), r.transcript())
				Expect(r.reply.Descriptors[1].KV).To(BeNil(), "no metadata decodes to nothing"+r.transcript())
				for i, g := range goodKV {
					d := r.reply.Descriptors[2+i]
					Expect(d.KVError).To(Or(BeNil(), HaveValue(BeEmpty())), "%s was rejected%s", g.name, r.transcript())
					Expect(d.KV).NotTo(BeNil(), "%s did not decode%s", g.name, r.transcript())
					Expect(*d.KV).To(Equal(g.want), "%s%s", g.name, r.transcript())
				}
				for i, b := range badKV {
					d := r.reply.Descriptors[2+len(goodKV)+i]
					Expect(d.KVError).NotTo(BeNil(), "%s was accepted%s", b.name, r.transcript())
					Expect(*d.KVError).NotTo(BeEmpty(), "%s was accepted%s", b.name, r.transcript())
					Expect(d.KV).To(BeNil(), "%s decoded%s", b.name, r.transcript())
				}
			})
		})
	})
}
