package graceful

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// PeerCred is what the kernel recorded of the process at the other end of
// a unix connection when the connection was made (SO_PEERCRED on Linux;
// getpeereid on BSD and macOS, where PID is -1). The ids are as this
// process's user namespace sees them: a peer whose user or group has no
// mapping there shows as the overflow id (usually 65534).
type PeerCred struct{ PID, UID, GID int }

func (c PeerCred) String() string {
	return fmt.Sprintf("pid %d uid %d gid %d", c.PID, c.UID, c.GID)
}

// peerCred asks the kernel who is at the other end of c.
func peerCred(c syscall.Conn) (PeerCred, error) {
	cred, err := fdpass.PeerCred(c)
	return PeerCred(cred), err
}

// overflowIDs are the ids the kernel shows for a user or group that has no
// mapping in this user namespace, read once (Linux's
// /proc/sys/kernel/overflowuid and overflowgid; 65534 if they cannot be
// read). Elsewhere there are none: -1.
var overflowIDs = sync.OnceValues(func() (uid, gid int) {
	if !hasOverflowIDs {
		return -1, -1
	}
	read := func(name string) int {
		b, err := os.ReadFile("/proc/sys/kernel/" + name)
		if err != nil {
			return 65534
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 65534
		}
		return n
	}
	return read("overflowuid"), read("overflowgid")
})

// authorize decides whether the peer at the other end of c may take part:
// never a peer that shows as the overflow user or group (an unmapped id of
// another user namespace, which any process there may be), then the
// policy, or by default the same effective user as this process (AUTH-1,
// AUTH-5, AUTH-7).
func authorize(c PeerCred, policy func(PeerCred) error) error {
	if ou, og := overflowIDs(); c.UID == ou || c.GID == og {
		return fmt.Errorf("%w: %v is the overflow id of an unmapped user or group", ErrUnauthorized, c)
	}
	if policy != nil {
		if err := policy(c); err != nil {
			return fmt.Errorf("%w: %v: %w", ErrUnauthorized, c, err)
		}
		return nil
	}
	if me := os.Geteuid(); c.UID != me {
		return fmt.Errorf("%w: peer %v, this process runs as uid %d", ErrUnauthorized, c, me)
	}
	return nil
}

// checkPeer identifies the peer of c and applies authorize.
func checkPeer(c syscall.Conn, policy func(PeerCred) error) (PeerCred, error) {
	cred, err := peerCred(c)
	if err != nil {
		return cred, fmt.Errorf("%w: cannot identify the peer: %w", ErrUnauthorized, err)
	}
	return cred, authorize(cred, policy)
}
