// Package blocking is a prototype receiver of the graceful protocol that
// makes blocking system calls on a socket it creates itself, with the
// kernel's SO_RCVTIMEO and SO_SNDTIMEO as the deadline of every step,
// instead of going through package net and Go's poller. It speaks to an
// unchanged graceful.Server with the library's own frame codec
// (graceful/wire), so that the benchmarks can show what the library's
// receiving side would gain from working this way (see ANALYSIS.md). It is
// a measuring instrument, not a second implementation: it checks what the
// benchmarks need and no more.
package blocking

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/internal/floor"
)

// ErrBusy means the server answered BUSY.
var ErrBusy = errors.New("blocking: sender busy")

// Receiver runs receiver sessions, reusing its buffers.
type Receiver struct {
	// Timeout bounds each blocking step.
	Timeout time.Duration
	dec     wire.Decoder
	oob     []byte
	out     []byte
	fds     []int
}

// Receive connects to the server at path, receives one set, appends its
// descriptors to fds, and sends ACK and READY. On error it closes what it
// received of the set.
func (r *Receiver) Receive(path string, fds []int) (_ []int, err error) {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fds, os.NewSyscallError("socket", err)
	}
	defer unix.Close(sock)
	tv := unix.NsecToTimeval(r.Timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fds, os.NewSyscallError("setsockopt", err)
	}
	if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fds, os.NewSyscallError("setsockopt", err)
	}
	if err := unix.Connect(sock, &unix.SockaddrUnix{Name: path}); err != nil {
		return fds, os.NewSyscallError("connect", err)
	}
	if r.oob == nil {
		r.oob = make([]byte, unix.CmsgSpace((wire.MaxFdsPerBatch+1)*4))
	}
	r.dec = wire.Decoder{}
	start := len(fds)
	defer func() {
		if err != nil {
			floor.CloseAll(fds[start:])
			floor.CloseAll(r.dec.TakeFds())
			fds = fds[:start]
		}
	}()

	r.out = wire.AppendHello(r.out[:0], wire.Hello{MinVersion: wire.Version, MaxVersion: wire.Version})
	if err := floor.WriteFull(sock, r.out); err != nil {
		return fds, err
	}
	for welcomed := false; ; {
		f, err := r.next(sock)
		if err != nil {
			return fds, err
		}
		switch t := f.Header.Type; {
		case t == wire.TypeWelcome && !welcomed:
			if v, err := wire.ParseWelcome(f.Payload); err != nil || v != wire.Version {
				return fds, fmt.Errorf("welcome: version %d, %v", v, err)
			}
			welcomed = true
		case t == wire.TypeBatch && welcomed:
			fds = append(fds, f.Fds...)
			if _, err := wire.ParseBatch(f.Payload, len(f.Fds)); err != nil {
				return fds, err
			}
		case t == wire.TypeEnd && welcomed:
			n, err := wire.ParseCount(f.Payload)
			if err != nil {
				return fds, err
			}
			if int(n) != len(fds)-start || r.dec.Queued() != 0 {
				return fds, fmt.Errorf("END says %d, %d arrived", n, len(fds)-start)
			}
			r.out = wire.AppendCount(r.out[:0], wire.TypeAck, n)
			r.out = wire.AppendReady(r.out)
			return fds, floor.WriteFull(sock, r.out)
		case t == wire.TypeError:
			e, err := wire.ParseError(f.Payload)
			if err == nil && e.Code == wire.CodeBusy {
				return fds, ErrBusy
			}
			return fds, fmt.Errorf("sender: %v %q (%v)", e.Code, e.Message, err)
		default:
			return fds, fmt.Errorf("unexpected %v", t)
		}
	}
}

// next reads until a whole frame is in, with one blocking recvmsg per
// read.
func (r *Receiver) next(sock int) (wire.Frame, error) {
	for {
		f, ok, err := r.dec.Next()
		if err != nil || ok {
			return f, err
		}
		n, oobn, flags, _, err := unix.Recvmsg(sock, r.dec.Space(4096), r.oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return f, os.NewSyscallError("recvmsg", err) // EAGAIN: SO_RCVTIMEO expired
		}
		r.fds = floor.AppendRights(r.fds[:0], r.oob[:oobn])
		if flags&unix.MSG_CTRUNC != 0 {
			floor.CloseAll(r.fds)
			return f, errors.New("control data truncated")
		}
		r.dec.Commit(n)
		r.dec.AddFds(r.fds)
		if n == 0 {
			return f, errors.New("peer closed mid-session")
		}
	}
}

// Serve is the prototype's sender: it accepts connections on the blocking
// listening socket ln one at a time and runs one session on each with
// blocking system calls (the kernel's SO_RCVTIMEO and SO_SNDTIMEO as
// deadlines), handing out fds as RAW descriptors, until accept fails (for
// instance because ln was shut down). Like graceful.Server it checks the
// peer's uid with SO_PEERCRED and waits for READY.
func Serve(ln int, fds []int, timeout time.Duration) error {
	s := &sender{timeout: timeout, fds: fds, oob: make([]byte, unix.CmsgSpace((wire.MaxFdsPerBatch+1)*4))}
	for {
		conn, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		switch {
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case err == unix.EINVAL: // shut down
			return nil
		case err != nil:
			return os.NewSyscallError("accept4", err)
		}
		err = s.session(conn)
		unix.Close(conn)
		if err != nil {
			return err
		}
	}
}

type sender struct {
	timeout time.Duration
	fds     []int
	dec     wire.Decoder
	oob     []byte
	out     []byte
	recs    []wire.Record
	scratch []int
}

func (s *sender) session(conn int) error {
	tv := unix.NsecToTimeval(s.timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(conn, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if err := unix.SetsockoptTimeval(conn, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	s.dec = wire.Decoder{}
	f, err := s.read(conn, wire.HeaderSize+12)
	if err != nil {
		return err
	}
	if f.Header.Type != wire.TypeHello {
		return fmt.Errorf("%v where HELLO was due", f.Header.Type)
	}
	cred, err := unix.GetsockoptUcred(conn, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return os.NewSyscallError("getsockopt", err)
	}
	if int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("peer uid %d", cred.Uid)
	}
	s.out = wire.AppendWelcome(s.out[:0], wire.Version)
	for i := 0; i < len(s.fds); i += wire.MaxFdsPerBatch {
		batch := s.fds[i:min(i+wire.MaxFdsPerBatch, len(s.fds))]
		s.recs = s.recs[:0]
		for range batch {
			s.recs = append(s.recs, wire.Record{Kind: wire.KindRaw})
		}
		s.out = wire.AppendBatch(s.out, s.recs)
		if i+len(batch) == len(s.fds) {
			s.out = wire.AppendCount(s.out, wire.TypeEnd, uint32(len(s.fds)))
		}
		if err := sendAll(conn, s.out, unix.UnixRights(batch...)); err != nil {
			return err
		}
		s.out = s.out[:0]
	}
	if len(s.fds) == 0 {
		s.out = wire.AppendCount(s.out, wire.TypeEnd, 0)
		if err := floor.WriteFull(conn, s.out); err != nil {
			return err
		}
	}
	// ACK and READY are fixed-size: read both, and nothing past them.
	for _, want := range []wire.Type{wire.TypeAck, wire.TypeReady} {
		f, err := s.read(conn, wire.HeaderSize+4+wire.HeaderSize-s.dec.Buffered())
		if err != nil {
			return err
		}
		if f.Header.Type != want {
			return fmt.Errorf("%v where %v was due", f.Header.Type, want)
		}
	}
	return nil
}

// read returns the next frame, reading at most limit bytes at a time.
func (s *sender) read(conn, limit int) (wire.Frame, error) {
	for {
		f, ok, err := s.dec.Next()
		if err != nil || ok {
			return f, err
		}
		n, oobn, _, _, err := unix.Recvmsg(conn, s.dec.Space(limit)[:max(limit, 1)], s.oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return f, os.NewSyscallError("recvmsg", err)
		}
		floor.CloseAll(floor.AppendRights(s.scratch[:0], s.oob[:oobn])) // a receiver sends none
		if n == 0 {
			return f, errors.New("peer closed mid-session")
		}
		s.dec.Commit(n)
	}
}

// sendAll writes p with oob on its first byte, the rest with plain writes.
func sendAll(sock int, p, oob []byte) error {
	for {
		n, err := unix.SendmsgN(sock, p, oob, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("sendmsg", err)
		}
		return floor.WriteFull(sock, p[n:])
	}
}
