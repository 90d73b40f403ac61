package wire

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"
)

// AppendMeta appends the key-value metadata encoding of section 5 (META-1):
// keys sorted by their bytes.
func AppendMeta(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m[k])))
		b = append(b, m[k]...)
	}
	return b
}

// MetaSize is the length of m's encoding.
func MetaSize(m map[string]string) int {
	n := 4
	for k, v := range m {
		n += 8 + len(k) + len(v)
	}
	return n
}

// ParseMeta decodes the key-value metadata encoding (META-2). It returns
// nothing but the error when any part is wrong.
func ParseMeta(p []byte) (map[string]string, error) {
	if len(p) < 4 {
		return nil, malformed("metadata of %d bytes has no pair count", len(p))
	}
	pairs := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(pairs)*8 > uint64(len(p)) {
		return nil, malformed("metadata claims %d pairs in %d bytes", pairs, len(p))
	}
	next := func(what string, i uint32) (string, error) {
		if len(p) < 4 {
			return "", malformed("metadata pair %d: %s length runs past the end", i, what)
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)) {
			return "", malformed("metadata pair %d: %s of %d bytes, %d left", i, what, n, len(p))
		}
		s := p[:n]
		p = p[n:]
		if !utf8.Valid(s) {
			return "", malformed("metadata pair %d: %s is not UTF-8", i, what)
		}
		return string(s), nil
	}
	m := make(map[string]string, pairs)
	for i := uint32(0); i < pairs; i++ {
		k, err := next("key", i)
		if err != nil {
			return nil, err
		}
		v, err := next("value", i)
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, malformed("metadata key %q repeated", k)
		}
		m[k] = v
	}
	if len(p) != 0 {
		return nil, malformed("%d bytes after the last metadata pair", len(p))
	}
	return m, nil
}

// String helps error messages.
func (h Header) String() string {
	return fmt.Sprintf("%v{flags=%d nfds=%d length=%d}", h.Type, h.Flags, h.NFds, h.Length)
}
