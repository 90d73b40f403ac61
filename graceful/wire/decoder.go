package wire

// Frame is one complete frame read from a stream.
type Frame struct {
	Header Header
	// Payload aliases the Decoder's buffer: it is valid until the next call
	// to a Decoder method.
	Payload []byte
	// Fds holds a BATCH frame's descriptors, in record order; nil otherwise.
	// The descriptors belong to the caller once Next returns them; the
	// slice, like Payload, is the Decoder's and valid until the next call
	// to a Decoder method.
	Fds []int
}

// Decoder turns the bytes and descriptors of a SOCK_STREAM connection back
// into frames, however the reads split them (TRN-2). Descriptors are queued
// in arrival order and taken by each complete BATCH frame (RCV-1).
//
// The zero value is ready to use. A Decoder never closes anything: after an
// error the caller takes the queue with TakeFds and closes it.
type Decoder struct {
	buf     []byte
	start   int
	fds     []int // the queue
	taken   []int // the last BATCH frame's descriptors, out of the queue
	allowed TypeSet
}

// Expect makes the Decoder judge every following header against allowed,
// the types that may come at this point of the session (FRM-3), as soon as
// its 8 bytes are in. The zero TypeSet, the Decoder's first, allows any.
func (d *Decoder) Expect(allowed TypeSet) { d.allowed = allowed }

// Peek returns the next frame's header, checked, as soon as its 8 bytes are
// in, so that its caller can judge it against its own limits before the
// payload is read (FRM-4). ok is false while fewer bytes are buffered.
func (d *Decoder) Peek() (h Header, ok bool, err error) {
	live := d.buf[d.start:]
	if len(live) < HeaderSize {
		return h, false, nil
	}
	h, err = ParseHeaderIn(live, d.allowed)
	return h, err == nil, err
}

// Space returns at least min free bytes at the end of the buffer, for the
// next read to fill; Commit(n) then adds the n bytes read.
func (d *Decoder) Space(min int) []byte {
	if d.start == len(d.buf) { // nothing left to keep: start over
		d.buf, d.start = d.buf[:0], 0
	}
	if cap(d.buf)-len(d.buf) < min {
		live := len(d.buf) - d.start
		if cap(d.buf)-live >= min { // the bytes consumed make the room
			copy(d.buf, d.buf[d.start:])
			d.buf = d.buf[:live]
		} else {
			// Doubling keeps a large frame read in small pieces from being
			// copied once per read.
			grown := make([]byte, live, max(live+min, 2*cap(d.buf)))
			copy(grown, d.buf[d.start:])
			d.buf = grown
		}
		d.start = 0
	}
	return d.buf[len(d.buf):cap(d.buf)]
}

// Reset empties the decoder for another stream, keeping its buffer, and
// allows every type again. It returns the queued descriptors, which the
// caller must close.
func (d *Decoder) Reset() []int {
	d.buf, d.start, d.allowed = d.buf[:0], 0, 0
	return d.TakeFds()
}

// Commit adds n bytes written into the slice Space returned.
func (d *Decoder) Commit(n int) { d.buf = d.buf[:len(d.buf)+n] }

// Write adds bytes read from the stream. It never fails.
func (d *Decoder) Write(p []byte) (int, error) {
	copy(d.Space(len(p)), p)
	d.Commit(len(p))
	return len(p), nil
}

// AddFds queues descriptors received with the bytes.
func (d *Decoder) AddFds(fds []int) { d.fds = append(d.fds, fds...) }

// Buffered is the number of bytes read but not yet returned as a frame.
func (d *Decoder) Buffered() int { return len(d.buf) - d.start }

// Queued is the number of descriptors received but not yet taken by a frame.
func (d *Decoder) Queued() int { return len(d.fds) }

// TakeFds empties the queue and returns what it held, nil if nothing.
func (d *Decoder) TakeFds() []int {
	if len(d.fds) == 0 {
		d.fds = d.fds[:0] // keep the storage for the next stream
		return nil
	}
	fds := d.fds
	d.fds = nil
	return fds
}

// Need is how many more bytes complete the next frame (its header first),
// for a reader that must not read past it.
func (d *Decoder) Need() int {
	live := d.buf[d.start:]
	if len(live) < HeaderSize {
		return HeaderSize - len(live)
	}
	h, err := ParseHeaderIn(live, d.allowed)
	if err != nil {
		return 1
	}
	return max(HeaderSize+int(h.Length)-len(live), 1)
}

// Next returns the next complete frame. ok is false when more bytes are
// needed. A header is checked as soon as its 8 bytes are in, before its
// payload is read (FRM-4).
func (d *Decoder) Next() (f Frame, ok bool, err error) {
	live := d.buf[d.start:]
	if len(live) < HeaderSize {
		return f, false, d.checkQueue()
	}
	h, err := ParseHeaderIn(live, d.allowed)
	if err != nil {
		return f, false, err
	}
	end := HeaderSize + int(h.Length)
	if len(live) < end {
		return f, false, d.checkQueue()
	}
	f = Frame{Header: h, Payload: live[HeaderSize:end:end]}
	if h.Type == TypeBatch {
		n := int(h.NFds)
		if len(d.fds) < n {
			return Frame{}, false, malformed("BATCH declares %d descriptors, %d arrived", n, len(d.fds))
		}
		// Both slices keep their storage: a session of many batches
		// allocates nothing here after its first.
		d.taken = append(d.taken[:0], d.fds[:n]...)
		d.fds = d.fds[:copy(d.fds, d.fds[n:])]
		f.Fds = d.taken[:n:n]
	}
	d.start += end
	return f, true, nil
}

// checkQueue enforces RCV-3 once every complete frame has been taken.
func (d *Decoder) checkQueue() error {
	if len(d.fds) > MaxFdsPerBatch {
		return malformed("%d descriptors queued without a frame to take them", len(d.fds))
	}
	return nil
}
