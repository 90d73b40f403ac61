package kit

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxChallenge is the most bytes a challenge reads.
const maxChallenge = 64 << 10

// Challenge proves that fd is a real, usable descriptor (spec/adapter.md,
// challenge). It waits with poll and never changes the descriptor's flags,
// which it shares with the sender.
func Challenge(fd int, action string, offset, length int, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	switch action {
	case "accept":
		if err := waitReadable(fd, deadline); err != nil {
			return nil, err
		}
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			return nil, os.NewSyscallError("accept4", err)
		}
		defer unix.Close(c)
		var out []byte
		buf := make([]byte, 4096)
		for len(out) < maxChallenge {
			if err := waitReadable(c, deadline); err != nil {
				return nil, err
			}
			n, err := unix.Read(c, buf)
			if err != nil {
				return nil, os.NewSyscallError("read", err)
			}
			if n == 0 {
				break
			}
			out = append(out, buf[:n]...)
		}
		return out, nil
	case "recv":
		if err := waitReadable(fd, deadline); err != nil {
			return nil, err
		}
		buf := make([]byte, maxChallenge)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return nil, os.NewSyscallError("read", err)
		}
		return buf[:n], nil
	case "pread":
		buf := make([]byte, length)
		n, err := unix.Pread(fd, buf, int64(offset))
		if err != nil {
			return nil, os.NewSyscallError("pread", err)
		}
		return buf[:n], nil
	}
	return nil, fmt.Errorf("unknown challenge %q", action)
}

var errTimeout = errors.New("timed out")

func waitReadable(fd int, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errTimeout
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if n > 0 {
			return nil
		}
	}
}
