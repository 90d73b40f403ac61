package graceful

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// The Send functions hand one descriptor to a receiver on a connection you
// made yourself, in one whole session: each checks the peer as a Server
// does (same effective uid, never the overflow id) before reading from it,
// waits for the receiver's HELLO, sends, and returns nil only once the
// receiver has acknowledged the descriptor. The receiver takes each with
// ReceiveFrom, or all of them with ReceiveAllFrom. None of them dups the
// descriptor or changes its blocking mode, none leaves a deadline on dst,
// and while one runs dst refuses descriptors (SO_PASSRIGHTS, Linux 6.16
// and later). A session has the defaults of Server: DefaultTimeout per
// step, three times that in all.

// Send dials the unix socket at addr (a path, or "@name"), where a
// receiver accepts, sends fd and closes the connection.
func Send(addr string, fd int, meta io.WriterTo) error {
	conn, err := defaultClient.dial(addr)
	if err != nil {
		return opError("send", addr, err)
	}
	defer conn.Close()
	return sendOn(conn, addr, func(w ResponseWriter) error { return w.Write(fd, meta) })
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
	sc, ok := v.(syscall.Conn)
	return sendOne(dst, func(w ResponseWriter) error {
		if !ok {
			return notFiler(w, v)
		}
		return writeConn(w, sc, kind, meta)
	})
}

func sendOne(dst net.Conn, write func(ResponseWriter) error) error {
	uc, err := unixConn(dst)
	if err != nil {
		return opError("send", "", err)
	}
	return sendOn(uc, connAddr(uc), write)
}

func sendOn(uc *net.UnixConn, addr string, write func(ResponseWriter) error) error {
	cfg := senderConfig{
		timeout:      DefaultTimeout,
		readyTimeout: -1,
		session:      time.Now().Add(sessionTimeout(0, 0)),
		exact:        true,
	}
	defer uc.SetDeadline(time.Time{})
	if _, err := checkPeer(uc, nil); err != nil {
		tell(uc, err, cfg.timeout)
		return opError("send", addr, err)
	}
	defer refuseRights(uc)()
	deadline, bySession := helloDeadline(cfg)
	hello, err := readHello(uc, cfg.timeout, deadline, bySession)
	if err != nil {
		tell(uc, err, cfg.timeout)
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: closed before HELLO", ErrPeerClosed)
		}
		return opError("send", addr, err)
	}
	var werr error
	_, err = offer(uc, hello, cfg, func(_ net.Conn, w ResponseWriter) { werr = write(w) })
	if werr != nil {
		return opError("send", addr, werr)
	}
	return opError("send", addr, err)
}
