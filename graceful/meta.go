package graceful

import (
	"bytes"
	"fmt"
	"io"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// Meta is key-value metadata for a descriptor, in the language-neutral
// encoding of spec/protocol.md section 5. It implements io.WriterTo, so it
// can be given wherever this package takes metadata.
//
//	m := graceful.Meta{}
//	if _, err := m.ReadFrom(meta); err != nil { ... }
//	f := os.NewFile(uintptr(fd), m["name"])
type Meta map[string]string

// WriteTo writes m's encoding to w.
func (m Meta) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(wire.AppendMeta(nil, m))
	return int64(n), err
}

// ReadFrom reads an encoded Meta from r until EOF, and adds its pairs to m
// (allocating m when it is nil). Nothing is added when the encoding is
// wrong. It reads at most wire.MaxMetaSize bytes. A nil r (a descriptor
// sent without metadata) adds nothing.
func (m *Meta) ReadFrom(r io.Reader) (int64, error) {
	if r == nil {
		if *m == nil {
			*m = Meta{}
		}
		return 0, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, wire.MaxMetaSize+1))
	if err != nil {
		return int64(len(b)), opError("read metadata", "", err)
	}
	if len(b) > wire.MaxMetaSize {
		return int64(len(b)), opError("read metadata", "", fmt.Errorf("%w: more than %d bytes", ErrMetaTooLarge, wire.MaxMetaSize))
	}
	got, err := wire.ParseMeta(b)
	if err != nil {
		return int64(len(b)), opError("read metadata", "", protocolError(err))
	}
	if *m == nil {
		*m = make(Meta, len(got))
	}
	for k, v := range got {
		(*m)[k] = v
	}
	return int64(len(b)), nil
}

// MetaFrom decodes the Meta that r holds. A nil r (no metadata) gives an
// empty Meta.
func MetaFrom(r io.Reader) (Meta, error) {
	m := Meta{}
	_, err := m.ReadFrom(r)
	return m, err
}

// limitedBuffer collects metadata and refuses to grow past the limit, so
// that oversized metadata is an error and never truncated.
type limitedBuffer struct {
	bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.limit {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrMetaTooLarge, b.limit)
	}
	return b.Buffer.Write(p)
}
