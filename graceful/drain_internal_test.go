//go:build linux

package graceful

import (
	"io"
	"net"
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
