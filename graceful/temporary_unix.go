package graceful

import (
	"errors"
	"syscall"
)

// isTemporary reports accept errors that pass: out of descriptors or
// buffers, or a connection that died in the queue.
func isTemporary(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
