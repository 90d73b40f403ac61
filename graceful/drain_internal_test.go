//go:build linux

package graceful

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

var _ = ginkgo.Describe("a drained keep-alive connection", func() {
	var (
		conn   *drainConn
		client net.Conn
	)
	ginkgo.BeforeEach(func() {
		server, c := net.Pipe()
		client = c
		conn = &drainConn{Conn: server}
		conn.state.Store(connIdle)
		ginkgo.DeferCleanup(server.Close)
		ginkgo.DeferCleanup(client.Close)
		go func() {
			client.SetWriteDeadline(time.Now().Add(5 * time.Second))
			client.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		}()
	})

	ginkgo.It("is not closed once a request has been read from it", func() {
		n, err := conn.Read(make([]byte, 64))
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(n).To(gomega.BeNumerically(">", 0))
		closeIfIdle(conn)

		// The response still gets through.
		go func() {
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			conn.Write([]byte("HTTP/1.1 200 OK\r\n"))
		}()
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len("HTTP/1.1 200 OK\r\n"))
		_, err = io.ReadFull(client, got)
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
	})

	ginkgo.It("drops a request that arrives after the drainer closed it, so that it is never handled twice", func() {
		// The drainer has won the switch from idle and is about to close:
		// bytes that the read returns now must not reach the server.
		gomega.Expect(conn.state.CompareAndSwap(connIdle, connClosing)).To(gomega.BeTrue())
		n, err := conn.Read(make([]byte, 64))
		gomega.Expect(err).To(gomega.MatchError(net.ErrClosed))
		gomega.Expect(n).To(gomega.BeZero())
	})
})

// closeCounter is a connection that only records that it was closed.
type closeCounter struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func newCloseCounter() *closeCounter { return &closeCounter{closed: make(chan struct{})} }

func (c *closeCounter) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

var _ = ginkgo.Describe("the drainer's pass over its connections", func() {
	ginkgo.It("closes those idle longer than the grace, and none that is new or serving a request", func() {
		d := NewHTTPDrainer(&http.Server{})
		idle, active, fresh := newCloseCounter(), newCloseCounter(), newCloseCounter()
		long := time.Now().Add(-time.Hour)
		d.conns[idle] = connInfo{state: http.StateIdle, since: long}
		d.conns[active] = connInfo{state: http.StateActive, since: long}
		d.conns[fresh] = connInfo{state: http.StateNew, since: long}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		drained := make(chan error, 1)
		go func() { drained <- d.Drain(ctx) }()
		gomega.Eventually(idle.closed).Should(gomega.BeClosed())
		d.mu.Lock() // the pass that closed it is over
		d.mu.Unlock()
		gomega.Expect(active.closed).NotTo(gomega.BeClosed())
		gomega.Expect(fresh.closed).NotTo(gomega.BeClosed())
		cancel()
		gomega.Eventually(drained).Should(gomega.Receive(gomega.MatchError(context.Canceled)))
		gomega.Expect(active.closed).To(gomega.BeClosed(), "the context's end closes what is left")
		gomega.Expect(fresh.closed).To(gomega.BeClosed())
	})

	ginkgo.It("leaves a connection idle for less than the grace", func() {
		d := NewHTTPDrainer(&http.Server{})
		d.IdleGrace = time.Hour
		recent, old := newCloseCounter(), newCloseCounter()
		d.conns[recent] = connInfo{state: http.StateIdle, since: time.Now()}
		d.conns[old] = connInfo{state: http.StateIdle, since: time.Now().Add(-2 * time.Hour)}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		drained := make(chan error, 1)
		go func() { drained <- d.Drain(ctx) }()
		gomega.Eventually(old.closed).Should(gomega.BeClosed())
		d.mu.Lock()
		d.mu.Unlock()
		gomega.Expect(recent.closed).NotTo(gomega.BeClosed())
		cancel()
		gomega.Eventually(drained).Should(gomega.Receive(gomega.MatchError(context.Canceled)))
	})
})
