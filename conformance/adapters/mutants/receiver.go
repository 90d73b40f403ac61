package main

import (
	"errors"
	"io"
	"net"
	"os"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/conformance/internal/kit"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Receive runs the sessions of a receive request, trying again while the
// sender answers BUSY (AUTH-10), within the session deadline.
func (e *engine) Receive(req kit.ReceiveRequest) ([]kit.Received, error) {
	session := req.SessionTimeout
	if session <= 0 {
		session = 3 * req.Timeout
	}
	giveUp := time.Now().Add(session)
	pause := time.Millisecond
	for {
		got, err := e.receiveOnce(req, giveUp)
		var ce *codeErr
		if e.on("no-busy-retry") || !errors.As(err, &ce) || !ce.remote || ce.code != wire.CodeBusy.String() ||
			time.Now().Add(pause).After(giveUp) {
			return got, err
		}
		time.Sleep(pause) // a back-off, not a synchronisation
		pause = min(2*pause, 100*time.Millisecond)
	}
}

func (e *engine) dial(req kit.ReceiveRequest) (*net.UnixConn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// A unix connect waits for room in the listener's backlog for as long
	// as SO_SNDTIMEO allows (TRN-8).
	if !e.on("no-connect-deadline") {
		tv := unix.NsecToTimeval(req.Timeout.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: req.Socket}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EAGAIN) {
			return nil, timeout("connect %s: deadline passed", req.Socket)
		}
		return nil, &codeErr{code: "OTHER", msg: "connect: " + err.Error()}
	}
	zero := unix.Timeval{}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &zero)
	f := os.NewFile(uintptr(fd), "conn")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// pair is a descriptor received, with its record.
type pair struct {
	fd  int
	rec wire.Record
}

// receiveOnce runs the sessions of a request on one connection.
func (e *engine) receiveOnce(req kit.ReceiveRequest, giveUp time.Time) (got []kit.Received, err error) {
	uc, err := e.dial(req)
	if err != nil {
		return nil, err
	}
	c, err := newConn(e, uc, req.Timeout, true)
	if err != nil {
		uc.Close()
		return nil, err
	}
	defer c.close()
	if !e.noSessionDeadline() {
		c.sessionEnd = giveUp
	}
	if e.on("hang") {
		c.step, c.sessionEnd = 0, time.Time{}
	}
	var pending []pair
	defer func() {
		if err == nil && e.on("leak-on-success") {
			if fd, derr := unix.Dup(connFd(c)); derr == nil {
				_ = fd // kept open on purpose
			}
		}
		if err != nil && e.on("crash-on-failure") {
			var ce *codeErr
			if !errors.As(err, &ce) || ce.code != "UNCONFIRMED" {
				os.Exit(1)
			}
		}
		if err != nil {
			c.tell(err)
			if !e.on("leak-on-error") {
				for _, p := range pending {
					unix.Close(p.fd)
				}
				closeAll(c.fds)
				c.fds = nil
			}
			if e.on("leak-socket") {
				if fd, derr := unix.Dup(connFd(c)); derr == nil {
					_ = fd // kept open on purpose
				}
			}
		}
	}()
	if !e.on("receiver-trusts") && !e.on("receiver-check-after-hello") {
		if err := e.checkPeer(c, req.Authorize); err != nil {
			return nil, err
		}
	}
	hello := wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1})
	switch {
	case e.on("hello-wide"):
		// Versions as 4-byte fields: a layout of its own (NEG-5).
		hello = append(wire.AppendHeader(nil, wire.Header{Type: wire.TypeHello, Length: 16}), wire.Magic...)
		hello = append(hello, 0, 0, 0, 1, 0, 0, 0, 1)
	case e.on("hello-le"):
		hello = toLittleEndian(hello)
		hello[16], hello[17], hello[18], hello[19] = 1, 0, 1, 0
	case e.on("hello-wrong-range"):
		hello = wire.AppendHello(nil, wire.Hello{MinVersion: 2, MaxVersion: 2})
	}
	sessions := max(req.Sessions, 1)
	for i := 0; i < sessions; i++ {
		if i == 0 || !e.on("no-hello-second-session") {
			if err := c.write(hello); err != nil && !isPeerClosed(err) {
				return got, err
			}
			// A HELLO the sender did not read: what it wrote before it
			// closed is still there to read (AUTH-9).
		}
		if i == 0 && e.on("hup-before-data") {
			if hup(c) {
				return got, peerClosed("the sender hung up")
			}
		}
		if i == 0 && e.on("receiver-check-after-hello") {
			if err := e.checkPeer(c, req.Authorize); err != nil {
				return nil, err
			}
		}
		pending = pending[:0]
		var set []pair
		set, err = e.receiveSet(c, req, &pending)
		if err != nil {
			return got, err
		}
		pending = nil
		handed, herr := e.handOver(c, req, set, &got)
		if herr != nil {
			return got, herr
		}
		count := handed
		if e.on("ack-count-off") {
			count++
		}
		ack := wire.AppendCount(nil, wire.TypeAck, uint32(count))
		if e.on("little-endian") {
			ack = toLittleEndian(ack)
		}
		if err := c.write(ack); err != nil {
			// The set is the user's: delivered, not confirmed (ACK-3).
			if e.on("unconfirmed-as-failure") {
				return got, err
			}
			return got, &codeErr{code: "UNCONFIRMED", msg: "ACK not written: " + err.Error(), quiet: true}
		}
		if req.Ready && !e.on("no-ready") {
			if err := c.write(wire.AppendReady(nil)); err != nil {
				if e.on("unconfirmed-as-failure") {
					return got, err
				}
				return got, &codeErr{code: "UNCONFIRMED", msg: "READY not written: " + err.Error(), quiet: true}
			}
		}
	}
	if e.on("liar") {
		for i := range got {
			unix.Close(got[i].Fd)
			nfd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			got[i].Fd = nfd
		}
	}
	return got, nil
}

func isPeerClosed(err error) bool {
	var ce *codeErr
	return errors.As(err, &ce) && ce.code == wire.CodePeerClosed.String()
}

// hup reports whether the connection is hung up (a poll that sees
// POLLHUP or POLLERR), the check of the hup-before-data mutant.
func hup(c *conn) bool {
	pfd := []unix.PollFd{{Fd: int32(connFd(c)), Events: unix.POLLIN}}
	unix.Poll(pfd, int(c.step/time.Millisecond))
	return pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
}

func connFd(c *conn) int {
	var out int
	c.rc.Control(func(fd uintptr) { out = int(fd) })
	return out
}

// receiveSet reads WELCOME (or ERROR), the BATCH frames and END, and
// returns the set, verified. pending holds what was received so far, for
// the caller to close on failure.
func (e *engine) receiveSet(c *conn, req kit.ReceiveRequest, pending *[]pair) ([]pair, error) {
	maxFds, maxMeta := req.MaxFds, req.MaxMetaBytes
	if maxFds <= 0 {
		maxFds = 16384
	}
	if maxMeta <= 0 {
		maxMeta = 16 << 20
	}
	if e.on("limit-off-by-one") {
		maxFds--
		maxMeta--
	}
	if e.on("no-set-limits") {
		maxFds, maxMeta = 1<<30, 1<<40
	}
	fds, meta := 0, 0
	limits := func(h wire.Header) error {
		if h.Type != wire.TypeBatch {
			return nil
		}
		code := wire.CodeTooLarge
		if e.on("limit-wrong-code") {
			code = wire.CodeMalformed
		}
		if fds+int(h.NFds) > maxFds {
			return fail(code, "set of %d descriptors, limit %d", fds+int(h.NFds), maxFds)
		}
		if m := int(h.Length) - int(h.NFds)*wire.RecordOverhead; !e.on("meta-limit-ignored") && meta+m > maxMeta {
			return fail(code, "set of %d bytes of metadata, limit %d", meta+m, maxMeta)
		}
		return nil
	}
	welcomed := false
	var set []pair
	for {
		allowed := []wire.Type{wire.TypeWelcome, wire.TypeError}
		if welcomed {
			allowed = []wire.Type{wire.TypeBatch, wire.TypeEnd, wire.TypeError}
			if e.on("receiver-second-welcome-ok") || e.on("receiver-batch-before-welcome") {
				allowed = append(allowed, wire.TypeWelcome)
			}
			c.payloadFirst = e.on("limit-after-payload")
		} else if e.on("receiver-batch-before-welcome") {
			allowed = append(allowed, wire.TypeBatch, wire.TypeEnd)
		}
		judge := limits
		if e.on("limit-partial-delivery") {
			judge = nil // judged once the BATCH is in, below
		}
		if e.on("missing-fds-ok") {
			c.lenientFds = true
		}
		f, err := c.readFrame(allowed, judge)
		if e.on("eof-as-end") && (errors.Is(err, io.EOF) || isPeerClosed(err)) {
			return set, nil // end of stream taken for END
		}
		if e.on("skip-odd-errors") && oddError(err, f) {
			continue
		}
		if e.on("limit-partial-delivery") && err == nil && f.h.Type == wire.TypeBatch {
			if lerr := limits(f.h); lerr != nil {
				for i := range f.fds {
					set = append(set, pair{f.fds[i], wire.Record{Kind: wire.KindRaw}})
				}
				return set, nil // what came, handed over: a fault (RCV-5)
			}
		}
		switch {
		case errors.Is(err, io.EOF) && !welcomed:
			return nil, peerClosed("closed before WELCOME")
		case errors.Is(err, io.EOF):
			return nil, peerClosed("the sender closed mid-session")
		case err != nil:
			return nil, err
		}
		switch f.h.Type {
		case wire.TypeWelcome:
			if welcomed {
				continue
			}
			v, _ := wire.ParseWelcome(f.payload)
			if v != 1 && !e.on("trust-welcome") && !(e.on("welcome-v0-ok") && v == 0) {
				return nil, fail(wire.CodeUnsupportedVersion, "WELCOME names version %d", v)
			}
			welcomed = true
		case wire.TypeError:
			if e.on("skip-odd-errors") && oddError(nil, f) {
				continue
			}
			if e.on("error-as-success") && welcomed {
				return set, nil
			}
			err := e.remoteErr(f.payload)
			if e.on("error-code-lost") {
				err.code = "OTHER"
			}
			return nil, err
		case wire.TypeBatch:
			welcomed = true
			recs, perr := parseBatch(e, f.payload, int(f.h.NFds))
			if perr != nil {
				closeAll(f.fds)
				return nil, perr
			}
			if !e.on("no-kind-check") {
				for i, r := range recs {
					if r.Kind != wire.KindRaw && fdKind(f.fds[i]) != r.Kind {
						closeAll(f.fds)
						return nil, fail(wire.CodeMalformed, "descriptor %d is not a %v", len(set)+i, r.Kind)
					}
				}
			}
			for i, r := range recs {
				p := pair{f.fds[i], r}
				set = append(set, p)
				*pending = append(*pending, p)
			}
			fds += len(recs)
			meta += int(f.h.Length) - len(recs)*wire.RecordOverhead
			if e.on("early-handover") {
				return set, nil
			}
		case wire.TypeEnd:
			n, _ := wire.ParseCount(f.payload)
			switch {
			case int(n) == len(set):
			case e.on("end-count-lax"):
			case e.on("end-count-le") && int(n) < len(set):
			case e.on("end-count-gt") && int(n) > len(set):
			default:
				return nil, fail(wire.CodeMalformed, "END counts %d, the BATCH frames carried %d", n, len(set))
			}
			if len(c.fds) > 0 && !e.on("leftover-ok") {
				return nil, fail(wire.CodeMalformed, "%d descriptors beyond the BATCH frames", len(c.fds))
			}
			return set, nil
		}
	}
}

// parseBatch decodes a BATCH payload (RCV-2), with the faults of the
// record checks.
func parseBatch(e *engine, payload []byte, n int) ([]wire.Record, error) {
	var recs []wire.Record
	off := 0
	for i := 0; i < n; i++ {
		if off+wire.RecordOverhead > len(payload) {
			return nil, fail(wire.CodeMalformed, "record %d runs past the payload", i)
		}
		kind, rflags := wire.Kind(payload[off]), payload[off+1]
		ml := int(uint32(payload[off+2])<<24 | uint32(payload[off+3])<<16 | uint32(payload[off+4])<<8 | uint32(payload[off+5]))
		off += wire.RecordOverhead
		metaLimit := wire.MaxMetaSize
		if e.on("meta-over-ok") {
			metaLimit = 1 << 20
		}
		if e.on("refuse-meta-65536") {
			metaLimit--
		}
		if e.on("refuse-252") && n >= wire.MaxFdsPerBatch {
			return nil, fail(wire.CodeMalformed, "BATCH of %d descriptors", n)
		}
		switch {
		case kind > wire.KindPacket && e.on("unknown-kind-ok"):
			kind = wire.KindRaw
		case kind > wire.KindPacket:
			return nil, fail(wire.CodeMalformed, "record %d: unknown kind %d", i, kind)
		case rflags&^1 != 0 && !e.on("rflags-lax"):
			return nil, fail(wire.CodeMalformed, "record %d: rflags %#x", i, rflags)
		case ml > metaLimit:
			return nil, fail(wire.CodeMalformed, "record %d: %d bytes of metadata", i, ml)
		case rflags&1 == 0 && ml != 0 && !e.on("hasmeta-lax"):
			return nil, fail(wire.CodeMalformed, "record %d: metadata without HAS_META", i)
		case off+ml > len(payload):
			return nil, fail(wire.CodeMalformed, "record %d: metadata runs past the payload", i)
		}
		r := wire.Record{Kind: kind, HasMeta: rflags&1 != 0, Meta: append([]byte(nil), payload[off:off+ml]...)}
		if !r.HasMeta {
			r.Meta = nil
		}
		recs = append(recs, r)
		off += ml
	}
	if off != len(payload) && !e.on("trailing-ok") {
		return nil, fail(wire.CodeMalformed, "%d bytes after the last record", len(payload)-off)
	}
	return recs, nil
}

// handOver gives the set to the adapter (the user), in record order,
// honouring its refusal (ACK-1).
func (e *engine) handOver(c *conn, req kit.ReceiveRequest, set []pair, got *[]kit.Received) (int, error) {
	order := make([]int, len(set))
	for i := range order {
		order[i] = i
	}
	switch {
	case e.on("reorder"):
		for i := range order {
			order[i] = len(order) - 1 - i
		}
	case e.on("sort-by-inode"):
		sort.SliceStable(order, func(a, b int) bool { return inode(set[order[a]].fd) < inode(set[order[b]].fd) })
	}
	base := len(*got)
	for i, p := range set {
		fd := set[order[i]].fd
		r := kit.Received{Fd: fd, Kind: p.rec.Kind.String(), Meta: p.rec.Meta, HasMeta: p.rec.HasMeta}
		switch {
		case e.on("drop-meta"):
			r.Meta, r.HasMeta = nil, false
		case e.on("empty-as-none") && len(r.Meta) == 0:
			r.Meta, r.HasMeta = nil, false
		}
		if e.on("dedup") && i > 0 && inode(set[i-1].fd) == inode(fd) {
			unix.Close(fd)
			continue
		}
		if r.HasMeta && req.KV {
			if m, err := decodeKV(e, r.Meta); err != nil {
				r.KVError = err.Error()
			} else {
				r.KV = m
			}
		}
		*got = append(*got, r)
		if len(*got)-base-1 == req.Reject {
			if !e.on("leak-refused-rest") {
				for _, q := range set[i+1:] {
					unix.Close(q.fd)
				}
			}
			if e.on("reject-as-ack") {
				return len(set), nil
			}
			code := wire.CodeRejected
			if e.on("reject-wrong-code") {
				code = wire.CodeMalformed
			}
			c.write(wire.AppendError(nil, wire.ErrorFrame{Code: code, Message: "refused by the user"}))
			return 0, &codeErr{code: "REJECTED", msg: "the user refused a descriptor", quiet: true}
		}
	}
	return len(set), nil
}

func inode(fd int) uint64 {
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	return st.Ino
}

// oddError reports whether a failure or a frame is an ERROR the
// skip-odd-errors mutant passes over: a broken one, an unknown code, or
// text that is not ASCII.
func oddError(err error, f frame) bool {
	var ce *codeErr
	if err != nil {
		return errors.As(err, &ce) && ce.remote && f.h.Type == wire.TypeError
	}
	if f.h.Type != wire.TypeError {
		return false
	}
	ef, perr := wire.ParseError(f.payload)
	if perr != nil || !knownCodes[ef.Code] {
		return true
	}
	for _, b := range []byte(ef.Message) {
		if b >= 0x80 {
			return true
		}
	}
	return false
}
