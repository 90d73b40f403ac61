package graceful

import (
	"fmt"
	"net"
	"os"
)

// FdListener turns a received descriptor into a net.Listener. It takes
// ownership of fd: fd is closed whatever the outcome, and on success the
// listener holds its own duplicate. Like every Go socket, the listener is
// non-blocking; the flag belongs to the open file description, which the
// sender shares, and Go's own sockets already have it.
func FdListener(fd int) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), fmt.Sprintf("fd%d", fd))
	defer f.Close()
	return net.FileListener(f)
}

// FdConn turns a received descriptor into a net.Conn. It takes ownership
// of fd like FdListener.
func FdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), fmt.Sprintf("fd%d", fd))
	defer f.Close()
	return net.FileConn(f)
}

// FdPacketConn turns a received descriptor into a net.PacketConn. It takes
// ownership of fd like FdListener.
func FdPacketConn(fd int) (net.PacketConn, error) {
	f := os.NewFile(uintptr(fd), fmt.Sprintf("fd%d", fd))
	defer f.Close()
	return net.FilePacketConn(f)
}
