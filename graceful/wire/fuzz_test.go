package wire_test

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// FuzzDecoder feeds stream to a Decoder in reads shaped by plan, with fake
// descriptor numbers arriving before some reads. Each plan byte is one read:
// its high nibble plus one is the read's length, its bits 0-2 how many
// descriptors come with it (7 means 200, to reach the RCV-3 limit), bit 3
// whether the read goes through Space and Commit rather than Write. The
// plan repeats until the stream is used up; an empty plan is one read of
// everything.
//
// The Decoder must never panic, and must conserve descriptors: each one
// added comes back exactly once, in order, in a frame's Fds or in TakeFds.
// The frames it returns must be the stream's bytes, in order, each with a
// valid header.
func FuzzDecoder(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream, plan []byte) {
		var (
			d        wire.Decoder
			added    []int // every fake descriptor, in the order given
			returned []int // descriptors of returned frames, then TakeFds
			frames   []byte
			fed      int
			nextFd   = 1000
			failure  error
		)
		for step := 0; fed < len(stream) && failure == nil; step++ {
			size, nfds, viaSpace := len(stream), 0, false
			if len(plan) > 0 {
				p := plan[step%len(plan)]
				size, nfds, viaSpace = int(p>>4)+1, int(p&7), p&8 != 0
				if nfds == 7 {
					nfds = 200
				}
			}
			read := stream[fed:min(fed+size, len(stream))]
			if viaSpace {
				space := d.Space(len(read))
				if len(space) < len(read) {
					t.Fatalf("Space(%d) returned %d bytes", len(read), len(space))
				}
				d.Commit(copy(space, read))
			} else if n, err := d.Write(read); n != len(read) || err != nil {
				t.Fatalf("Write(%d bytes) = %d, %v", len(read), n, err)
			}
			fed += len(read)
			fds := make([]int, nfds)
			for i := range fds {
				fds[i] = nextFd
				nextFd++
			}
			d.AddFds(fds)
			added = append(added, fds...)

			for {
				fr, ok, err := d.Next()
				if err != nil {
					if !errors.Is(err, wire.ErrMalformed) && !errors.Is(err, wire.ErrTooLarge) {
						t.Fatalf("error %q is neither ErrMalformed nor ErrTooLarge", err)
					}
					if ok || fr.Fds != nil {
						t.Fatalf("Next returned ok=%v, fds %v with error %q", ok, fr.Fds, err)
					}
					failure = err
					break
				}
				if !ok {
					checkWaiting(t, &d, stream[len(frames):fed])
					if h, hok, herr := d.Peek(); herr != nil || hok != (d.Buffered() >= wire.HeaderSize) {
						t.Fatalf("Peek() = %v, %v, %v with %d bytes of a frame that Next waits for", h, hok, herr, d.Buffered())
					}
					break
				}
				checkFrame(t, fr)
				frames = wire.AppendHeader(frames, fr.Header)
				frames = append(frames, fr.Payload...)
				returned = append(returned, fr.Fds...)
			}
		}
		if !bytes.HasPrefix(stream, frames) {
			t.Fatalf("the frames returned are not the stream's bytes")
		}
		if failure == nil && d.Buffered() != len(stream)-len(frames) {
			t.Fatalf("Buffered() = %d, want %d", d.Buffered(), len(stream)-len(frames))
		}
		queued := d.Queued()
		rest := d.TakeFds()
		if len(rest) != queued {
			t.Fatalf("Queued() = %d but TakeFds returned %d", queued, len(rest))
		}
		returned = append(returned, rest...)
		if !slices.Equal(returned, added) {
			t.Fatalf("descriptors not conserved:\nadded    %v\nreturned %v", added, returned)
		}
		if d.Queued() != 0 || len(d.TakeFds()) != 0 {
			t.Fatalf("TakeFds did not empty the queue")
		}
	})
}

// checkFrame checks that a returned frame is whole and valid.
func checkFrame(t *testing.T, fr wire.Frame) {
	t.Helper()
	var h [wire.HeaderSize]byte
	if got, err := wire.ParseHeader(wire.AppendHeader(h[:0], fr.Header)); err != nil || got != fr.Header {
		t.Fatalf("returned a frame with an invalid header %v: %v", fr.Header, err)
	}
	if len(fr.Payload) != int(fr.Header.Length) {
		t.Fatalf("%v frame with %d payload bytes", fr.Header, len(fr.Payload))
	}
	if fr.Header.Type == wire.TypeBatch {
		if len(fr.Fds) != int(fr.Header.NFds) {
			t.Fatalf("%v frame with %d descriptors", fr.Header, len(fr.Fds))
		}
	} else if fr.Fds != nil {
		t.Fatalf("%v frame took descriptors %v", fr.Header, fr.Fds)
	}
}

// checkWaiting checks a Decoder that asks for more bytes: no complete
// frame is left in what it holds, Need counts exactly the bytes missing
// from the next frame, and not more than 252 descriptors wait (RCV-3).
func checkWaiting(t *testing.T, d *wire.Decoder, unread []byte) {
	t.Helper()
	if d.Buffered() != len(unread) {
		t.Fatalf("Buffered() = %d, want %d", d.Buffered(), len(unread))
	}
	want := wire.HeaderSize - len(unread)
	if len(unread) >= wire.HeaderSize {
		h, err := wire.ParseHeader(unread)
		if err != nil {
			t.Fatalf("waits for more bytes behind a bad header: %v", err)
		}
		if wire.HeaderSize+int(h.Length) <= len(unread) {
			t.Fatalf("waits for more bytes with a whole %v frame buffered", h)
		}
		want = wire.HeaderSize + int(h.Length) - len(unread)
	}
	if d.Need() != want {
		t.Fatalf("Need() = %d with %d bytes of the frame buffered, want %d", d.Need(), len(unread), want)
	}
	if d.Queued() > wire.MaxFdsPerBatch {
		t.Fatalf("%d descriptors queued without an error (RCV-3)", d.Queued())
	}
}

// FuzzParseMeta checks that ParseMeta never panics, that what it rejects is
// ErrMalformed, and that what it accepts is valid UTF-8 with unique keys
// and round-trips through AppendMeta: same pairs, same size, and the same
// bytes when the input had its keys sorted.
func FuzzParseMeta(f *testing.F) {
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := wire.ParseMeta(p)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("error %q is not ErrMalformed", err)
			}
			if m != nil {
				t.Fatalf("returned %v with the error", m)
			}
			return
		}
		for k, v := range m {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				t.Fatalf("accepted text that is not UTF-8: %q=%q", k, v)
			}
		}
		keys := metaKeys(p)
		if len(keys) != len(m) {
			t.Fatalf("%d keys in the input, %d in the map: a repeated key was accepted", len(keys), len(m))
		}
		q := wire.AppendMeta(nil, m)
		if len(q) != len(p) || wire.MetaSize(m) != len(q) {
			t.Fatalf("%d bytes re-encode to %d (MetaSize %d)", len(p), len(q), wire.MetaSize(m))
		}
		again, err := wire.ParseMeta(q)
		if err != nil || !maps.Equal(again, m) {
			t.Fatalf("re-encoding does not parse back: %v, %v", again, err)
		}
		if slices.IsSorted(keys) && !bytes.Equal(q, p) {
			t.Fatalf("sorted input %x re-encodes to %x", p, q)
		}
	})
}
