// Package wire encodes and decodes the frames of the graceful hand-off
// protocol, version 1 (spec/protocol.md). It does no I/O and makes no system
// calls: descriptors are plain integers here, so the codec can be
// table-tested and fuzzed, and reused by tools that speak the protocol on
// their own sockets (the conformance suite's raw-wire tests do).
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Version is the protocol version this package implements.
const Version = 1

// Magic opens every HELLO payload.
const Magic = "GRACEFUL"

// Limits from section 6 of the spec.
const (
	HeaderSize     = 8
	MaxFdsPerBatch = 252
	MaxMetaSize    = 64 << 10
	MaxPayload     = 1 << 20
	MaxErrorText   = 1024
	RecordOverhead = 6
)

// Type is a frame type.
type Type uint8

// Frame types.
const (
	TypeHello   Type = 1
	TypeWelcome Type = 2
	TypeBatch   Type = 3
	TypeEnd     Type = 4
	TypeAck     Type = 5
	TypeReady   Type = 6
	TypeError   Type = 7
)

var typeNames = map[Type]string{
	TypeHello: "HELLO", TypeWelcome: "WELCOME", TypeBatch: "BATCH", TypeEnd: "END",
	TypeAck: "ACK", TypeReady: "READY", TypeError: "ERROR",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Kind says what a descriptor is.
type Kind uint8

// Descriptor kinds.
const (
	KindRaw      Kind = 0
	KindFile     Kind = 1
	KindListener Kind = 2
	KindStream   Kind = 3
	KindPacket   Kind = 4
	maxKind           = KindPacket
)

func (k Kind) String() string {
	switch k {
	case KindRaw:
		return "raw"
	case KindFile:
		return "file"
	case KindListener:
		return "listener"
	case KindStream:
		return "stream"
	case KindPacket:
		return "packet"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Code is an ERROR frame's code.
type Code uint16

// Error codes (section 8).
const (
	CodeMalformed          Code = 1
	CodeUnsupportedVersion Code = 2
	CodeUnauthorized       Code = 3
	CodeTooLarge           Code = 4
	CodeTruncated          Code = 5
	CodeRejected           Code = 6
	CodeSenderFailed       Code = 7
	CodePeerClosed         Code = 8
	CodeBusy               Code = 9
)

var codeNames = map[Code]string{
	CodeMalformed: "MALFORMED", CodeUnsupportedVersion: "UNSUPPORTED_VERSION",
	CodeUnauthorized: "UNAUTHORIZED", CodeTooLarge: "TOO_LARGE", CodeTruncated: "TRUNCATED",
	CodeRejected: "REJECTED", CodeSenderFailed: "SENDER_FAILED", CodePeerClosed: "PEER_CLOSED",
	CodeBusy: "BUSY",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Errors returned by the decoders. Each is wrapped with detail; test with
// errors.Is.
var (
	// ErrMalformed: the bytes break a rule of the spec.
	ErrMalformed = errors.New("wire: malformed frame")
	// ErrTooLarge: a length is over its limit.
	ErrTooLarge = errors.New("wire: length over limit")
	// ErrBadErrorFrame: an ERROR frame broke a rule (its header, or its
	// message length). Such an error also matches ErrMalformed or
	// ErrTooLarge; a peer never answers it with an ERROR of its own
	// (ERR-3).
	ErrBadErrorFrame = errors.New("wire: malformed ERROR frame")
)

// badErrorFrame marks err as a broken ERROR frame, keeping its text.
type badErrorFrame struct{ err error }

func (e badErrorFrame) Error() string   { return e.err.Error() }
func (e badErrorFrame) Unwrap() []error { return []error{e.err, ErrBadErrorFrame} }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Header is the fixed 8-byte start of every frame.
type Header struct {
	Type   Type
	Flags  uint8
	NFds   uint16
	Length uint32
}

// AppendHeader appends h's encoding to b.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, byte(h.Type), h.Flags)
	b = binary.BigEndian.AppendUint16(b, h.NFds)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// TypeSet is a set of frame types: those a peer may send at some point of
// a session (FRM-3). The zero TypeSet stands for every type.
type TypeSet uint16

// TypesOf is the set of the types ts.
func TypesOf(ts ...Type) TypeSet {
	var s TypeSet
	for _, t := range ts {
		s |= 1 << t
	}
	return s
}

// Has reports whether t is in s; every type is in the zero TypeSet.
func (s TypeSet) Has(t Type) bool { return s == 0 || t <= TypeError && s&(1<<t) != 0 }

func (s TypeSet) String() string {
	if s == 0 {
		return "any frame"
	}
	var names []string
	for t := TypeHello; t <= TypeError; t++ {
		if s&(1<<t) != 0 {
			names = append(names, t.String())
		}
	}
	return strings.Join(names, " or ")
}

// ParseHeader decodes and checks the header at the start of b, which must
// hold at least HeaderSize bytes. It enforces FRM-2, FRM-3 (as far as the
// header alone tells) and FRM-4, in the order FRM-4 gives.
func ParseHeader(b []byte) (Header, error) { return ParseHeaderIn(b, 0) }

// ParseHeaderIn is ParseHeader at a point of the session where only the
// types of allowed may come: a frame of another type is malformed (FRM-3),
// judged right after its type is known to exist, before nfds and length.
func ParseHeaderIn(b []byte, allowed TypeSet) (Header, error) {
	h, err := parseHeaderIn(b, allowed)
	if err != nil && h.Type == TypeError {
		err = badErrorFrame{err}
	}
	return h, err
}

func parseHeaderIn(b []byte, allowed TypeSet) (Header, error) {
	h := Header{
		Type:   Type(b[0]),
		Flags:  b[1],
		NFds:   binary.BigEndian.Uint16(b[2:4]),
		Length: binary.BigEndian.Uint32(b[4:8]),
	}
	if h.Flags != 0 {
		return h, malformed("%v frame has flags %#x, want 0", h.Type, h.Flags)
	}
	if h.Type < TypeHello || h.Type > TypeError {
		return h, malformed("unknown frame type %d", uint8(h.Type))
	}
	if !allowed.Has(h.Type) {
		return h, malformed("%v frame where %v was due", h.Type, allowed)
	}
	if h.Type == TypeBatch && (h.NFds == 0 || h.NFds > MaxFdsPerBatch) {
		return h, malformed("BATCH carries %d descriptors, want 1 to %d", h.NFds, MaxFdsPerBatch)
	}
	if h.Type != TypeBatch && h.NFds != 0 {
		return h, malformed("%v frame declares %d descriptors", h.Type, h.NFds)
	}
	if h.Length > MaxPayload {
		return h, fmt.Errorf("%w: %v frame of %d bytes, limit %d", ErrTooLarge, h.Type, h.Length, MaxPayload)
	}
	want, fixed := fixedLength(h.Type)
	switch {
	case h.Type == TypeBatch && uint64(h.Length) < uint64(h.NFds)*RecordOverhead:
		return h, malformed("BATCH of %d records in %d bytes", h.NFds, h.Length)
	case fixed && h.Length != want:
		return h, malformed("%v payload is %d bytes, want %d", h.Type, h.Length, want)
	case h.Type == TypeError && (h.Length < 4 || h.Length > 4+MaxErrorText):
		return h, malformed("ERROR payload is %d bytes", h.Length)
	}
	return h, nil
}

// FixedSize is the whole size of a frame of type t, header included, for
// the types whose payload has a fixed length.
func FixedSize(t Type) (int, bool) {
	n, ok := fixedLength(t)
	return HeaderSize + int(n), ok
}

func fixedLength(t Type) (uint32, bool) {
	switch t {
	case TypeHello:
		return 12, true
	case TypeWelcome:
		return 2, true
	case TypeEnd, TypeAck:
		return 4, true
	case TypeReady:
		return 0, true
	}
	return 0, false
}

// Hello is the receiver's opening frame.
type Hello struct{ MinVersion, MaxVersion uint16 }

// Record describes one descriptor of a BATCH frame.
type Record struct {
	Kind Kind
	// HasMeta is false when the sender attached no metadata, which is not
	// the same as empty metadata.
	HasMeta bool
	Meta    []byte
}

// ErrorFrame is the payload of an ERROR frame.
type ErrorFrame struct {
	Code    Code
	Message string
}

// AppendHello appends a complete HELLO frame.
func AppendHello(b []byte, h Hello) []byte {
	b = AppendHeader(b, Header{Type: TypeHello, Length: 12})
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint16(b, h.MinVersion)
	return binary.BigEndian.AppendUint16(b, h.MaxVersion)
}

// AppendWelcome appends a complete WELCOME frame.
func AppendWelcome(b []byte, version uint16) []byte {
	b = AppendHeader(b, Header{Type: TypeWelcome, Length: 2})
	return binary.BigEndian.AppendUint16(b, version)
}

// AppendCount appends a complete END or ACK frame.
func AppendCount(b []byte, t Type, count uint32) []byte {
	b = AppendHeader(b, Header{Type: t, Length: 4})
	return binary.BigEndian.AppendUint32(b, count)
}

// AppendReady appends a complete READY frame.
func AppendReady(b []byte) []byte {
	return AppendHeader(b, Header{Type: TypeReady})
}

// AppendError appends a complete ERROR frame; a message over MaxErrorText
// bytes is cut at a rune boundary (it is for logs only).
func AppendError(b []byte, e ErrorFrame) []byte {
	msg := e.Message
	if len(msg) > MaxErrorText {
		cut := MaxErrorText
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	b = AppendHeader(b, Header{Type: TypeError, Length: uint32(4 + len(msg))})
	b = binary.BigEndian.AppendUint16(b, uint16(e.Code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// BatchLength is the payload length of a BATCH frame holding recs.
func BatchLength(recs []Record) int {
	n := 0
	for _, r := range recs {
		n += RecordOverhead + len(r.Meta)
	}
	return n
}

// AppendBatch appends a complete BATCH frame holding recs. The caller
// checks the limits (CheckRecord, MaxFdsPerBatch, MaxPayload) first.
func AppendBatch(b []byte, recs []Record) []byte {
	b = AppendHeader(b, Header{Type: TypeBatch, NFds: uint16(len(recs)), Length: uint32(BatchLength(recs))})
	for _, r := range recs {
		b = AppendRecord(b, r)
	}
	return b
}

// AppendRecord appends one descriptor record.
func AppendRecord(b []byte, r Record) []byte {
	var flags byte
	if r.HasMeta {
		flags = 1
	}
	b = append(b, byte(r.Kind), flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Meta)))
	return append(b, r.Meta...)
}

// CheckRecord reports whether r can be sent (SND-5).
func CheckRecord(r Record) error {
	if len(r.Meta) > MaxMetaSize {
		return fmt.Errorf("%w: metadata of %d bytes, limit %d", ErrTooLarge, len(r.Meta), MaxMetaSize)
	}
	if !r.HasMeta && len(r.Meta) != 0 {
		return malformed("metadata without HAS_META")
	}
	if r.Kind > maxKind {
		return malformed("unknown kind %d", uint8(r.Kind))
	}
	return nil
}

// ParseHello decodes a HELLO payload.
func ParseHello(p []byte) (Hello, error) {
	if len(p) != 12 {
		return Hello{}, malformed("HELLO payload is %d bytes, want 12", len(p))
	}
	if string(p[:8]) != Magic {
		return Hello{}, malformed("HELLO magic %q, want %q", p[:8], Magic)
	}
	return Hello{binary.BigEndian.Uint16(p[8:10]), binary.BigEndian.Uint16(p[10:12])}, nil
}

// ParseWelcome decodes a WELCOME payload.
func ParseWelcome(p []byte) (uint16, error) {
	if len(p) != 2 {
		return 0, malformed("WELCOME payload is %d bytes, want 2", len(p))
	}
	return binary.BigEndian.Uint16(p), nil
}

// ParseCount decodes an END or ACK payload.
func ParseCount(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, malformed("count payload is %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint32(p), nil
}

// ParseError decodes an ERROR payload.
func ParseError(p []byte) (ErrorFrame, error) {
	if len(p) < 4 {
		return ErrorFrame{}, badErrorFrame{malformed("ERROR payload is %d bytes", len(p))}
	}
	n := int(binary.BigEndian.Uint16(p[2:4]))
	if n > MaxErrorText || len(p) != 4+n {
		return ErrorFrame{}, badErrorFrame{malformed("ERROR message of %d bytes in a %d-byte payload", n, len(p))}
	}
	return ErrorFrame{Code: Code(binary.BigEndian.Uint16(p[:2])), Message: string(p[4:])}, nil
}

// ParseBatch decodes the n records of a BATCH payload (RCV-2). The records'
// Meta slices alias p.
func ParseBatch(p []byte, n int) ([]Record, error) {
	return ParseBatchInto(make([]Record, 0, n), p, n)
}

// ParseBatchInto is ParseBatch reusing recs' storage: it returns the n
// records in recs[:n], grown if need be.
func ParseBatchInto(recs []Record, p []byte, n int) ([]Record, error) {
	recs = recs[:0]
	for i := 0; i < n; i++ {
		if len(p) < RecordOverhead {
			return nil, malformed("record %d: %d bytes left, want at least %d", i, len(p), RecordOverhead)
		}
		kind, flags := Kind(p[0]), p[1]
		size := binary.BigEndian.Uint32(p[2:6])
		p = p[RecordOverhead:]
		switch {
		case kind > maxKind:
			return nil, malformed("record %d: unknown kind %d", i, uint8(kind))
		case flags&^1 != 0:
			return nil, malformed("record %d: unknown flags %#x", i, flags)
		case size > MaxMetaSize:
			return nil, malformed("record %d: metadata of %d bytes, limit %d", i, size, MaxMetaSize)
		case flags == 0 && size != 0:
			return nil, malformed("record %d: %d metadata bytes without HAS_META", i, size)
		case uint64(size) > uint64(len(p)):
			return nil, malformed("record %d: metadata of %d bytes, %d left", i, size, len(p))
		}
		r := Record{Kind: kind, HasMeta: flags == 1}
		if r.HasMeta {
			r.Meta = p[:size:size]
		}
		p = p[size:]
		recs = append(recs, r)
	}
	if len(p) != 0 {
		return nil, malformed("%d bytes after the last record", len(p))
	}
	return recs, nil
}
