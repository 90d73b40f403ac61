package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrMalformed is returned for bytes that are not a message of this package.
var ErrMalformed = errors.New("proto: malformed message")

// HTTP: GET /req?id=N&c=CLASS, answered with the body "g=GEN id=N". CLASS
// names the load that sent it, so that each generation can count what it
// served per load.
const HTTPPath = "/req"

// HTTPBody is the answer to request id from generation gen.
func HTTPBody(gen int, id string) string { return fmt.Sprintf("g=%d id=%s", gen, id) }

// ParseHTTPBody returns the generation and request id of an answer.
func ParseHTTPBody(body string) (gen int, id string, err error) {
	g, rest, ok := strings.Cut(body, " ")
	if !ok || !strings.HasPrefix(g, "g=") || !strings.HasPrefix(rest, "id=") {
		return 0, "", fmt.Errorf("%w: http body %q", ErrMalformed, body)
	}
	gen, err = strconv.Atoi(g[2:])
	if err != nil {
		return 0, "", fmt.Errorf("%w: http body %q", ErrMalformed, body)
	}
	return gen, rest[3:], nil
}

// Stream frames. A stream client sends StreamRequestSize-byte requests:
//
//	seq uint64 | magic uint32 | reserved uint32
//
// and the server answers each with StreamReplySize bytes:
//
//	seq uint64 | count uint64 | gen uint32 | status uint32
//
// seq numbers the frames of one connection from 0. count is the number of
// frames the server side has answered on this connection, this one
// included, across every generation that served it: it survives a hand-off
// only through the connection's metadata, so count == seq+1 proves that the
// per-connection state moved with the descriptor. status is StatusOK, or
// StatusOutOfOrder when seq was not the one the server expected next.
const (
	StreamRequestSize = 16
	StreamReplySize   = 24
	streamMagic       = 0x67667331 // "gfs1"
)

// Stream answer statuses.
const (
	StatusOK         = 0
	StatusOutOfOrder = 1
)

// StreamReply is the server's answer to one stream frame.
type StreamReply struct {
	Seq, Count  uint64
	Gen, Status uint32
}

// PutStreamRequest encodes a request for frame seq into b.
func PutStreamRequest(b []byte, seq uint64) {
	binary.BigEndian.PutUint64(b[0:8], seq)
	binary.BigEndian.PutUint32(b[8:12], streamMagic)
	binary.BigEndian.PutUint32(b[12:16], 0)
}

// ParseStreamRequest decodes a request.
func ParseStreamRequest(b []byte) (seq uint64, err error) {
	if len(b) != StreamRequestSize || binary.BigEndian.Uint32(b[8:12]) != streamMagic {
		return 0, fmt.Errorf("%w: stream request % x", ErrMalformed, b)
	}
	return binary.BigEndian.Uint64(b[0:8]), nil
}

// PutStreamReply encodes r into b.
func PutStreamReply(b []byte, r StreamReply) {
	binary.BigEndian.PutUint64(b[0:8], r.Seq)
	binary.BigEndian.PutUint64(b[8:16], r.Count)
	binary.BigEndian.PutUint32(b[16:20], r.Gen)
	binary.BigEndian.PutUint32(b[20:24], r.Status)
}

// ParseStreamReply decodes an answer.
func ParseStreamReply(b []byte) (StreamReply, error) {
	if len(b) != StreamReplySize {
		return StreamReply{}, fmt.Errorf("%w: stream reply of %d bytes", ErrMalformed, len(b))
	}
	return StreamReply{
		Seq:    binary.BigEndian.Uint64(b[0:8]),
		Count:  binary.BigEndian.Uint64(b[8:16]),
		Gen:    binary.BigEndian.Uint32(b[16:20]),
		Status: binary.BigEndian.Uint32(b[20:24]),
	}, nil
}

// UDP datagrams: the client sends UDPRequestSize bytes, seq uint64 |
// client uint32; the server answers with UDPReplySize bytes, the same
// twelve followed by gen uint32.
const (
	UDPRequestSize = 12
	UDPReplySize   = 16
)

// PutUDPRequest encodes a request.
func PutUDPRequest(b []byte, client uint32, seq uint64) {
	binary.BigEndian.PutUint64(b[0:8], seq)
	binary.BigEndian.PutUint32(b[8:12], client)
}

// ParseUDPRequest decodes a request (or its echo).
func ParseUDPRequest(b []byte) (client uint32, seq uint64, err error) {
	if len(b) != UDPRequestSize {
		return 0, 0, fmt.Errorf("%w: udp request of %d bytes", ErrMalformed, len(b))
	}
	return binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint64(b[0:8]), nil
}

// UDPReply makes the answer to req from generation gen into b, which must
// hold UDPReplySize bytes.
func UDPReply(b, req []byte, gen int) ([]byte, error) {
	if len(req) != UDPRequestSize {
		return nil, fmt.Errorf("%w: udp request of %d bytes", ErrMalformed, len(req))
	}
	copy(b, req)
	binary.BigEndian.PutUint32(b[12:16], uint32(gen))
	return b[:UDPReplySize], nil
}

// ParseUDPReply decodes an answer.
func ParseUDPReply(b []byte) (client uint32, seq uint64, gen int, err error) {
	if len(b) != UDPReplySize {
		return 0, 0, 0, fmt.Errorf("%w: udp reply of %d bytes", ErrMalformed, len(b))
	}
	return binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint64(b[0:8]), int(binary.BigEndian.Uint32(b[12:16])), nil
}

// Line is one line of the shared append-only file: line n of writer w,
// written by generation g.
type Line struct {
	Writer, Gen int
	N           uint64
}

// String formats the line without its newline: "w=W n=N g=G".
func (l Line) String() string { return fmt.Sprintf("w=%d n=%d g=%d", l.Writer, l.N, l.Gen) }

// ParseLine decodes a line (without its newline).
func ParseLine(s string) (Line, error) {
	var l Line
	fields := strings.Fields(s)
	if len(fields) != 3 {
		return l, fmt.Errorf("%w: line %q", ErrMalformed, s)
	}
	values := make([]uint64, 3)
	for i, prefix := range []string{"w=", "n=", "g="} {
		v, ok := strings.CutPrefix(fields[i], prefix)
		if !ok {
			return l, fmt.Errorf("%w: line %q", ErrMalformed, s)
		}
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			return l, fmt.Errorf("%w: line %q", ErrMalformed, s)
		}
		values[i] = n
	}
	return Line{Writer: int(values[0]), N: values[1], Gen: int(values[2])}, nil
}
