package graceful

import (
	"fmt"
	"io"
	"net"
	"os"
)

// The Send functions hand one descriptor to a receiver on a connection you
// made yourself, in one whole session: each waits for the receiver's HELLO,
// checks the peer as a Server does (same effective uid), sends, and returns
// nil only once the receiver has acknowledged the descriptor. The receiver
// takes each with ReceiveFrom, or all of them with ReceiveAllFrom. None of
// them dups the descriptor or changes its blocking mode, and none leaves a
// deadline on dst.

// Send dials the unix socket at addr, where a receiver accepts, sends fd
// and closes the connection.
func Send(addr string, fd int, meta io.WriterTo) error {
	conn, err := Dial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	return SendTo(conn, fd, meta)
}

// SendTo sends fd, described as KindRaw, to the receiver at the other end
// of dst, which must be a *net.UnixConn.
func SendTo(dst net.Conn, fd int, meta io.WriterTo) error {
	return sendOne(dst, func(w ResponseWriter) error { return w.Write(fd, meta) })
}

// SendListenerTo sends ln to the receiver at the other end of dst.
func SendListenerTo(dst net.Conn, ln net.Listener, meta io.WriterTo) error {
	return sendValue(dst, ln, KindListener, meta)
}

// SendConnTo sends the connection c to the receiver at the other end of
// dst.
func SendConnTo(dst net.Conn, c net.Conn, meta io.WriterTo) error {
	return sendValue(dst, c, KindStream, meta)
}

// SendPacketConnTo sends pc to the receiver at the other end of dst.
func SendPacketConnTo(dst net.Conn, pc net.PacketConn, meta io.WriterTo) error {
	return sendValue(dst, pc, KindPacket, meta)
}

// SendFileTo sends f to the receiver at the other end of dst.
func SendFileTo(dst net.Conn, f *os.File, meta io.WriterTo) error {
	return sendValue(dst, f, KindFile, meta)
}

func sendValue(dst net.Conn, v any, kind Kind, meta io.WriterTo) error {
	return sendOne(dst, func(w ResponseWriter) error { return writeValue(w, v, kind, meta) })
}

func sendOne(dst net.Conn, write func(ResponseWriter) error) error {
	uc, ok := dst.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("%w: %T", ErrNotUnixConn, dst)
	}
	cfg := senderConfig{readyTimeout: -1, exact: true}
	var werr error
	err := serveSession(dst, pollerConn{uc}, cfg, func(_ net.Conn, w ResponseWriter) { werr = write(w) })
	if werr != nil {
		return werr
	}
	return err
}
