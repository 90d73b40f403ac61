package main

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/conformance/internal/kit"
	"github.com/gracefulfd/graceful/graceful/wire"
)

type pair struct {
	fd  int
	rec wire.Record
}

// Receive runs one receiver session on raw system calls.
func (e *engine) Receive(req kit.ReceiveRequest) ([]kit.Received, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: req.Socket}); err != nil {
		return nil, os.NewSyscallError("connect", err)
	}
	setTimeouts(fd, 0, req.Timeout)
	c := newConn(fd)
	c.perRead = e.fault == "per-read"
	if e.fault != "hang" {
		c.timeout = req.Timeout
	}
	c.cloexec = e.fault != "no-cloexec"
	c.oneCmsg = e.fault == "one-cmsg"
	c.ignoreCtrunc = e.fault == "ignore-ctrunc"

	var pending []pair
	failed := func(err error) ([]kit.Received, error) {
		var ce *codeErr
		if errors.As(err, &ce) && ce.code != wire.CodePeerClosed && ce.code != wire.CodeSenderFailed {
			c.sendError(ce.code, ce.msg)
		}
		if e.fault != "leak-on-error" {
			closeAll(c.dec.TakeFds())
			for _, p := range pending {
				unix.Close(p.fd)
			}
		}
		return nil, err
	}

	if err := c.write(wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1})); err != nil {
		return nil, err
	}
	welcomed := false
	total := 0
	for done := false; !done; {
		f, err := c.next()
		if errors.Is(err, errPeerClosed) {
			err = fail(wire.CodePeerClosed, "the sender closed mid-session")
		}
		if err != nil {
			return failed(err)
		}
		switch f.Header.Type {
		case wire.TypeWelcome:
			v, err := wire.ParseWelcome(f.Payload)
			if err != nil || welcomed {
				return failed(fail(wire.CodeMalformed, "unexpected WELCOME"))
			}
			if v != 1 && e.fault != "trust-welcome" {
				return failed(fail(wire.CodeUnsupportedVersion, "WELCOME names version %d", v))
			}
			welcomed = true
		case wire.TypeBatch:
			recs, err := wire.ParseBatch(f.Payload, len(f.Fds))
			if err == nil && !welcomed {
				err = errors.New("BATCH before WELCOME")
			}
			for i := 0; err == nil && i < len(recs); i++ {
				if k := recs[i].Kind; k != wire.KindRaw && fdKind(f.Fds[i]) != k {
					err = errors.New("a descriptor is not of its record's kind")
				}
			}
			if err != nil {
				if e.fault != "leak-on-error" {
					closeAll(f.Fds)
				}
				return failed(fail(wire.CodeMalformed, "%v", err))
			}
			for i, r := range recs {
				r.Meta = append([]byte(nil), r.Meta...)
				pending = append(pending, pair{f.Fds[i], r})
			}
			total += len(recs)
		case wire.TypeEnd:
			n, err := wire.ParseCount(f.Payload)
			if err != nil || !welcomed || int(n) != total || c.dec.Queued() != 0 {
				return failed(fail(wire.CodeMalformed, "END count %d, %d received, %d queued", n, total, c.dec.Queued()))
			}
			done = true
		case wire.TypeError:
			ef, err := wire.ParseError(f.Payload)
			if err != nil {
				return failed(fail(wire.CodeMalformed, "%v", err))
			}
			return failed(&codeErr{wire.CodeSenderFailed, "sender sent ERROR " + ef.Code.String() + ": " + ef.Message})
		default:
			return failed(fail(wire.CodeMalformed, "unexpected %v", f.Header.Type))
		}
	}

	// The set is whole: hand it over.
	var got []kit.Received
	for i, p := range pending {
		fd := p.fd
		if e.fault == "reorder" {
			fd = pending[len(pending)-1-i].fd
		}
		r := kit.Received{Fd: fd, Kind: p.rec.Kind.String(), Meta: p.rec.Meta, HasMeta: p.rec.HasMeta}
		if e.fault == "drop-meta" {
			r.Meta, r.HasMeta = nil, false
		}
		if r.HasMeta {
			if m, err := wire.ParseMeta(r.Meta); err != nil {
				r.KVError = err.Error()
			} else {
				r.KV = m
			}
		}
		got = append(got, r)
		if i == req.Reject {
			for _, q := range pending[i+1:] {
				unix.Close(q.fd)
			}
			c.sendError(wire.CodeRejected, "refused by the user")
			return got, fail(wire.CodeRejected, "the user refused descriptor %d", i)
		}
	}
	if err := c.write(wire.AppendCount(nil, wire.TypeAck, uint32(total))); err != nil {
		return got, err
	}
	if req.Ready {
		// A sender that did not wait for READY has closed: the set is
		// still acknowledged (RDY-2).
		c.write(wire.AppendReady(nil))
	}
	if e.fault == "liar" {
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
