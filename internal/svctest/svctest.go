// Package svctest is what the specs of package supervisor and of the
// graceful-supervisor command share: clients of the test service
// (supervisor/internal/testservice), which answers every connection with
// one line.
package svctest

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Timeout bounds each dial and read.
const Timeout = 10 * time.Second

// Answer dials network/addr and returns the line the service answers.
func Answer(network, addr string) string {
	GinkgoHelper()
	c, err := net.DialTimeout(network, addr, Timeout)
	Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	c.SetDeadline(time.Now().Add(Timeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	Expect(err).NotTo(HaveOccurred())
	return strings.TrimSpace(string(buf[:n]))
}

// Load dials again and again, counting what happens.
type Load struct {
	// Refused counts connections refused; Failed those that did not
	// answer a line; Answered those that did.
	Refused, Failed, Answered int
	done                      chan struct{}
}

// Dial dials network/addr until stop is closed, at most max times, one
// connection at a time.
func Dial(network, addr string, stop <-chan struct{}, max int) *Load {
	l := &Load{done: make(chan struct{})}
	go func() {
		defer GinkgoRecover()
		defer close(l.done)
		buf := make([]byte, 64)
		for i := 0; i < max; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout(network, addr, Timeout)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					l.Refused++
				} else {
					l.Failed++
				}
				continue
			}
			c.SetDeadline(time.Now().Add(Timeout))
			n, err := io.ReadAtLeast(c, buf, 1)
			c.Close()
			if err != nil || !strings.HasPrefix(string(buf[:n]), "pid ") {
				l.Failed++
				continue
			}
			l.Answered++
		}
	}()
	return l
}

// Wait waits until the load has stopped; its counts may be read then.
func (l *Load) Wait() {
	GinkgoHelper()
	Eventually(l.done).WithTimeout(60 * time.Second).Should(BeClosed())
}
