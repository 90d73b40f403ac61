//go:build linux

package graceful_test

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// rawPeer speaks the protocol by hand on its end of a connection, so that
// specs can send what no correct implementation would.
type rawPeer struct {
	c   *net.UnixConn
	dec wire.Decoder
	oob []byte
}

func newRawPeer(c *net.UnixConn) *rawPeer {
	return &rawPeer{c: c, oob: make([]byte, fdpass.OOBSize)}
}

// close closes the connection and any descriptor still queued.
func (p *rawPeer) close() {
	p.c.Close()
	fdpass.CloseAll(p.dec.TakeFds())
}

// send writes b with fds attached to its first byte.
func (p *rawPeer) send(b []byte, fds ...int) {
	GinkgoHelper()
	Expect(p.c.SetWriteDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
	Expect(fdpass.Write(p.c, b, fdpass.AppendRights(nil, fds))).To(Succeed())
}

// next reads the next frame; descriptors that come with it are closed.
func (p *rawPeer) next() (wire.Frame, error) {
	GinkgoHelper()
	Expect(p.c.SetReadDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
	for {
		f, ok, err := p.dec.Next()
		if err != nil || ok {
			fdpass.CloseAll(f.Fds)
			return f, err
		}
		n, fds, err := fdpass.Read(p.c, p.dec.Space(4096), p.oob, nil)
		p.dec.Commit(n)
		p.dec.AddFds(fds)
		if err != nil {
			fdpass.CloseAll(p.dec.TakeFds())
			return f, err
		}
	}
}

// expect reads the next frame and checks its type.
func (p *rawPeer) expect(t wire.Type) wire.Frame {
	GinkgoHelper()
	f, err := p.next()
	Expect(err).NotTo(HaveOccurred())
	Expect(f.Header.Type).To(Equal(t))
	return f
}

// expectError reads an ERROR frame and checks its code.
func (p *rawPeer) expectError(code wire.Code) {
	GinkgoHelper()
	f := p.expect(wire.TypeError)
	e, err := wire.ParseError(f.Payload)
	Expect(err).NotTo(HaveOccurred())
	Expect(e.Code).To(Equal(code), "ERROR message: %s", e.Message)
}

// expectClosed checks that the peer closed the connection: the end of the
// stream, or a reset when it closed without reading all we sent (a sender
// judges a frame from its header, and refuses a peer before reading).
func (p *rawPeer) expectClosed() {
	GinkgoHelper()
	_, err := p.next()
	Expect(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)).To(BeTrue(), "want end of stream, got %v", err)
}

// pipeFds returns n descriptors (ends of pipes), closed when the spec ends.
func pipeFds(n int) []int {
	GinkgoHelper()
	fds := make([]int, 0, n)
	for len(fds) < n {
		r, w, err := os.Pipe()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(r.Close)
		DeferCleanup(w.Close)
		fds = append(fds, int(r.Fd()), int(w.Fd()))
	}
	return fds[:n]
}

func hello() []byte {
	return wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1})
}

func records(n int) []wire.Record {
	recs := make([]wire.Record, n)
	for i := range recs {
		recs[i] = wire.Record{Kind: wire.KindFile}
	}
	return recs
}
