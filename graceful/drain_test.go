//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/graceful"
)

var _ = Describe("HTTPDrainer", func() {
	var (
		ln      net.Listener
		srv     *http.Server
		drainer *graceful.HTTPDrainer
		states  chan http.ConnState
		release chan struct{}
	)
	BeforeEach(func() {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		seen := make(chan http.ConnState, 64)
		states = seen
		release = make(chan struct{})
		unblock := release
		srv = &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					<-unblock
				}
				fmt.Fprint(w, "served")
			}),
			ConnState: func(_ net.Conn, st http.ConnState) {
				select {
				case seen <- st:
				default:
				}
			},
		}
		drainer = graceful.NewHTTPDrainer(srv)
		served := make(chan error, 1)
		go func() { served <- drainer.Serve(ln) }()
		DeferCleanup(func() {
			srv.Close()
			Eventually(served).Should(Receive(BeNil()))
		})
	})

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(c.Close)
		Expect(c.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
		return c, bufio.NewReader(c)
	}
	get := func(c net.Conn, r *bufio.Reader, path string) (*http.Response, error) {
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
			return nil, err
		}
		resp, err := http.ReadResponse(r, nil)
		if err == nil {
			DeferCleanup(resp.Body.Close)
		}
		return resp, err
	}
	drain := func(ctx context.Context) <-chan error {
		drained := make(chan error, 1)
		go func() { drained <- drainer.Drain(ctx) }()
		// Draining has begun once the listener refuses new connections.
		Eventually(func() error {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err == nil {
				c.Close()
			}
			return err
		}).Should(HaveOccurred())
		return drained
	}

	It("serves a request that arrives after the drain began on a connection accepted before it", func() {
		// This is the window http.Server.Shutdown drops: the connection
		// is accepted (StateNew) but its request is read after shutdown
		// began, and Shutdown's server closes it unanswered.
		c, r := dial()
		Eventually(states).Should(Receive(Equal(http.StateNew)))
		drained := drain(context.Background())

		resp, err := get(c, r, "/")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(resp.Close).To(BeTrue(), "a draining server asks the client to close")
		Eventually(drained).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
	})

	It("lets a request in flight finish, closes idle keep-alive connections after the grace, then returns", func() {
		idle, idleR := dial()
		resp, err := get(idle, idleR, "/")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Close).To(BeFalse())

		busy, busyR := dial()
		responses := make(chan *http.Response, 1)
		go func() {
			defer GinkgoRecover()
			resp, err := get(busy, busyR, "/slow")
			Expect(err).NotTo(HaveOccurred())
			responses <- resp
		}()
		Eventually(drainer.Active).Should(Equal(2))

		drained := drain(context.Background())
		Consistently(drained).WithTimeout(50 * time.Millisecond).ShouldNot(Receive())
		close(release)
		var slow *http.Response
		Eventually(responses).Should(Receive(&slow))
		Expect(slow.StatusCode).To(Equal(http.StatusOK))
		Eventually(drained).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
		Expect(drainer.Active()).To(BeZero())
	})

	It("closes what is left when the context ends", func() {
		dial()
		Eventually(states).Should(Receive(Equal(http.StateNew)))
		ctx, cancel := context.WithCancel(context.Background())
		drained := drain(ctx)
		Consistently(drained).WithTimeout(50 * time.Millisecond).ShouldNot(Receive())
		cancel()
		Eventually(drained).Should(Receive(MatchError(context.Canceled)))
		Eventually(drainer.Active).Should(BeZero())
	})
})

// closeErrListener is a listener whose Close closes it and returns err,
// and which says when it is first asked to accept.
type closeErrListener struct {
	net.Listener
	err       error
	once      *sync.Once
	accepting chan struct{}
}

func (l closeErrListener) Accept() (net.Conn, error) {
	l.once.Do(func() { close(l.accepting) })
	return l.Listener.Accept()
}

func (l closeErrListener) Close() error {
	l.Listener.Close()
	return l.err
}

var _ = Describe("HTTPDrainer's listeners", func() {
	drainWith := func(closeErrs ...error) error {
		GinkgoHelper()
		drainer := graceful.NewHTTPDrainer(&http.Server{})
		served := make(chan error, len(closeErrs))
		for _, cerr := range closeErrs {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			l := closeErrListener{Listener: ln, err: cerr, once: new(sync.Once), accepting: make(chan struct{})}
			go func() { served <- drainer.Serve(l) }()
			Eventually(l.accepting).Should(BeClosed()) // Serve has it
		}
		err := drainer.Drain(context.Background())
		for range closeErrs {
			Eventually(served).Should(Receive(BeNil()))
		}
		return err
	}

	It("reports the first listener that failed to close, once the drain is over", func() {
		first, second := errors.New("first close failed"), errors.New("second close failed")
		Expect(drainWith(nil, first, second)).To(MatchError(first))
	})

	It("does not count a listener that was closed already", func() {
		Expect(drainWith(fmt.Errorf("close: %w", net.ErrClosed), nil)).To(Succeed())
	})
})
