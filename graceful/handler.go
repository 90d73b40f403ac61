package graceful

import (
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// Handler writes the descriptors of one session. conn is the connection to
// the receiver; the Handler must not read from or write to it: use w.
type Handler interface {
	Handle(conn net.Conn, w ResponseWriter)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(net.Conn, ResponseWriter)

// Handle calls h(conn, w).
func (h HandlerFunc) Handle(conn net.Conn, w ResponseWriter) { h(conn, w) }

// CallbackHandler adapts a function that sends nothing, for example to
// note that a receiver connected, inside a SequenceHandler.
type CallbackHandler func()

// Handle calls cb().
func (cb CallbackHandler) Handle(net.Conn, ResponseWriter) { cb() }

// SequenceHandler returns a Handler that runs hs in order.
func SequenceHandler(hs ...Handler) Handler {
	return HandlerFunc(func(conn net.Conn, w ResponseWriter) {
		for _, h := range hs {
			h.Handle(conn, w)
		}
	})
}

// ListenerHandler returns a Handler that sends ln, which must implement
// syscall.Conn (every listener of package net does).
func ListenerHandler(ln net.Listener, meta io.WriterTo) Handler {
	return valueHandler(ln, KindListener, meta)
}

// ConnHandler returns a Handler that sends the connection c.
func ConnHandler(c net.Conn, meta io.WriterTo) Handler {
	return valueHandler(c, KindStream, meta)
}

// PacketConnHandler returns a Handler that sends pc.
func PacketConnHandler(pc net.PacketConn, meta io.WriterTo) Handler {
	return valueHandler(pc, KindPacket, meta)
}

// FileHandler returns a Handler that sends f. A socket opened as an
// *os.File is described as KindRaw.
func FileHandler(f *os.File, meta io.WriterTo) Handler {
	return valueHandler(f, KindFile, meta)
}

// FdHandler returns a Handler that sends fd, described as KindRaw. fd must
// stay open until the session is over. An error fails the session, which
// reports it (Done, the Logger) once.
func FdHandler(fd int, meta io.WriterTo) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { w.Write(fd, meta) })
}

// valueHandler sends the descriptor behind v, which a net.Listener,
// net.Conn or net.PacketConn need not expose: every one of package net's
// does, through syscall.Conn, and anything else fails the session.
func valueHandler(v any, kind Kind, meta io.WriterTo) Handler {
	sc, ok := v.(syscall.Conn)
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) {
		if !ok {
			notFiler(w, v)
			return
		}
		writeConn(w, sc, kind, meta)
	})
}

// notFiler fails the session of w: v has no descriptor to send.
func notFiler(w ResponseWriter, v any) error {
	err := fmt.Errorf("%w: %T", ErrNotFiler, v)
	if s, ok := w.(*sender); ok {
		return s.stop(fmt.Errorf("%w: %w", ErrSenderFailed, err))
	}
	return err
}

// writeConn queues the descriptor behind sc without dup and without
// touching its blocking mode (never Fd or File: see PITFALLS, TRN-9).
func writeConn(w ResponseWriter, sc syscall.Conn, kind Kind, meta io.WriterTo) error {
	s, _ := w.(*sender)
	fd, err := fdpass.RawFd(sc)
	if err == nil {
		if kind == KindFile && isSocket(fd) {
			kind = KindRaw
		}
		err = w.WriteKind(fd, kind, meta)
	}
	if s == nil {
		return err
	}
	if err != nil {
		return s.stop(fmt.Errorf("%w: %T: %w", ErrSenderFailed, sc, err))
	}
	s.keep = append(s.keep, sc)
	return nil
}

func isSocket(fd int) bool {
	k, err := fdpass.Kind(fd)
	return err == nil && k != KindFile
}

// KindOf reports what the kernel says fd is: KindFile for anything that is
// not a socket, KindListener for a listening stream socket, KindStream for
// another stream socket, KindPacket for a datagram socket. A
// ReceiveCallback can tell a listener from a file with it, whatever the
// sender's metadata says.
func KindOf(fd int) (Kind, error) { return fdpass.Kind(fd) }
