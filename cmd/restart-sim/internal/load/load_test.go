package load_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/load"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/report"
)

// config's Timeout is what a dropped datagram waits for; an answer that
// comes must come within it even on a busy machine, hence a second.
func config(clients int, max int64) load.Config {
	return load.Config{Start: time.Now(), Clients: clients, Timeout: time.Second, MaxPerClient: max}
}

// runFor runs g with a context that ends after d at the latest.
func runFor(g load.Generator, d time.Duration) report.Load {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	g.Run(ctx)
	return g.Result()
}

var _ = Describe("the generators", func() {
	It("refuse targets off loopback", func() {
		_, err := load.NewHTTP(config(1, 1), "192.0.2.1:80", false)
		Expect(err).To(MatchError(load.ErrNotLoopback))
		_, err = load.NewUDP(config(1, 1), "example.com:53")
		Expect(err).To(MatchError(load.ErrNotLoopback))
		_, err = load.NewStream(config(1, 1), "[::1]:9")
		Expect(err).NotTo(HaveOccurred())
	})

	Describe("HTTP", func() {
		It("counts answers, checks the echoed id, and credits the generation", func() {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, proto.HTTPBody(7, r.URL.Query().Get("id")))
			}))
			defer srv.Close()
			for _, keepAlive := range []bool{false, true} {
				l, err := load.NewHTTP(config(2, 5), srv.Listener.Addr().String(), keepAlive)
				Expect(err).NotTo(HaveOccurred())
				res := runFor(l, 10*time.Second)
				Expect(res).To(MatchFields(10, 10, 0))
				Expect(report.ServedBy(l.Samples())).To(Equal(map[int]int64{7: 10}))
			}
		})

		It("counts a wrong answer and a closed connection as failures", func() {
			n := 0
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n++
				first := n == 1
				mu.Unlock()
				if first {
					io.WriteString(w, proto.HTTPBody(1, "not-the-id"))
					return
				}
				c, _, err := w.(http.Hijacker).Hijack()
				Expect(err).NotTo(HaveOccurred())
				c.Close()
			}))
			defer srv.Close()
			l, err := load.NewHTTP(config(1, 2), srv.Listener.Addr().String(), false)
			Expect(err).NotTo(HaveOccurred())
			res := runFor(l, 10*time.Second)
			Expect(res.Sent).To(Equal(int64(2)))
			Expect(res.OK).To(BeZero())
			Expect(res.FailedBy).To(Equal(map[string]int64{"wrong": 1, "eof": 1}))
		})
	})

	Describe("UDP", func() {
		It("counts a datagram never answered as lost and an answer that came twice as duplicated", func() {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			defer pc.Close()
			go func() {
				defer GinkgoRecover()
				buf, out := make([]byte, 64), make([]byte, proto.UDPReplySize)
				for {
					n, addr, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					reply, err := proto.UDPReply(out, buf[:n], 3)
					Expect(err).NotTo(HaveOccurred())
					_, seq, _, _ := proto.ParseUDPReply(reply)
					switch seq {
					case 3: // dropped
					case 5: // answered twice
						pc.WriteTo(reply, addr)
						pc.WriteTo(reply, addr)
					default:
						pc.WriteTo(reply, addr)
					}
				}
			}()
			l, err := load.NewUDP(config(1, 10), pc.LocalAddr().String())
			Expect(err).NotTo(HaveOccurred())
			res := runFor(l, 10*time.Second)
			Expect(res.Sent).To(Equal(int64(10)))
			Expect(res.OK).To(Equal(int64(9)))
			Expect(res.FailedBy).To(Equal(map[string]int64{"timeout": 1}))
			Expect(res.Lost).To(Equal(int64(1)))
			Expect(res.Duplicated).To(Equal(int64(1)))
		})

		It("says refused when nobody listens", func() {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			addr := pc.LocalAddr().String()
			Expect(pc.Close()).To(Succeed())
			l, err := load.NewUDP(config(1, 3), addr)
			Expect(err).NotTo(HaveOccurred())
			res := runFor(l, 10*time.Second)
			Expect(res.FailedBy).To(HaveKey("refused"))
			Expect(res.Lost).To(Equal(int64(3)))
		})
	})

	Describe("streams", func() {
		// serveStreams answers stream frames; with forget, the server
		// forgets the connection's state after frame 2, as a hand-off
		// that lost the metadata would. accepted gets a value for every
		// connection accepted.
		var accepted chan struct{}
		serveStreams := func(forget bool) net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			accepted = make(chan struct{}, 64)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					select {
					case accepted <- struct{}{}:
					default:
					}
					go func() {
						defer c.Close()
						req, reply := make([]byte, proto.StreamRequestSize), make([]byte, proto.StreamReplySize)
						count := uint64(0)
						for {
							if _, err := io.ReadFull(c, req); err != nil {
								return
							}
							seq, _ := proto.ParseStreamRequest(req)
							count++
							if forget && seq == 2 {
								count = 1
							}
							proto.PutStreamReply(reply, proto.StreamReply{Seq: seq, Count: count, Gen: 4})
							c.Write(reply)
						}
					}()
				}
			}()
			return ln
		}

		It("exchanges numbered frames on connections made once, and on a new connection per frame", func() {
			ln := serveStreams(false)
			defer ln.Close()
			l, err := load.NewStream(config(2, 20), ln.Addr().String())
			Expect(err).NotTo(HaveOccurred())
			Expect(l.Connect(context.Background())).To(Succeed())
			res := runFor(l, 10*time.Second)
			Expect(res).To(MatchFields(60, 60, 0)) // 2 clients and the dialer, 20 frames each
			Expect(report.ServedBy(l.Samples())).To(Equal(map[int]int64{4: 60}))
		})

		It("counts the dials refused once the listener is gone", func() {
			ln := serveStreams(false)
			l, err := load.NewStream(config(1, 20), ln.Addr().String())
			Expect(err).NotTo(HaveOccurred())
			Expect(l.Connect(context.Background())).To(Succeed())
			// A connection the kernel completed but nobody accepted yet
			// would be reset by the Close.
			Eventually(accepted).Should(Receive())
			Expect(ln.Close()).To(Succeed())
			res := runFor(l, 10*time.Second)
			Expect(res.FailedBy).To(HaveKeyWithValue("refused", int64(20)))
			Expect(res.OK).To(Equal(int64(20)), "the connection made before goes on")
		})

		It("fails a stream whose per-connection state was lost, and goes on with a new connection", func() {
			ln := serveStreams(true)
			defer ln.Close()
			l, err := load.NewStream(config(1, 20), ln.Addr().String())
			Expect(err).NotTo(HaveOccurred())
			res := runFor(l, 10*time.Second)
			// Frame 2 of every connection is answered out of step: frames
			// 0, 1, 2 then a new connection, 20 frames in all; the dialer
			// never reaches frame 2.
			Expect(res.Sent).To(Equal(int64(20 + 20)))
			Expect(res.FailedBy).To(Equal(map[string]int64{"wrong": 6}))
			Expect(res.OK).To(Equal(int64(14 + 20)))
		})
	})

	Describe("a service of the user's", func() {
		It("HTTP: checks the status of every answer", func() {
			n := 0
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n++
				fail := n == 3
				mu.Unlock()
				if fail {
					w.WriteHeader(http.StatusInternalServerError)
				}
			}))
			defer srv.Close()
			l, err := load.NewHTTPURL(config(1, 5), srv.URL+"/health", true, http.StatusOK)
			Expect(err).NotTo(HaveOccurred())
			Expect(runFor(l, 10*time.Second)).To(MatchFields(5, 4, 1))
			_, err = load.NewHTTPURL(config(1, 5), "http://192.0.2.1/", false, 200)
			Expect(err).To(MatchError(load.ErrNotLoopback))
			_, err = load.NewHTTPURL(config(1, 5), "https://127.0.0.1/", false, 200)
			Expect(err).To(HaveOccurred())
		})

		It("TCP: expects every line back, on a new connection each", func() {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			defer ln.Close()
			accepted := 0
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted++
					if accepted == 2 { // answers something else once
						c.Write([]byte("nonsense\n"))
					} else {
						io.Copy(c, c)
					}
					c.Close()
				}
			}()
			l, err := load.NewTCPEcho(config(1, 4), ln.Addr().String())
			Expect(err).NotTo(HaveOccurred())
			res := runFor(l, 10*time.Second)
			Expect(res).To(MatchFields(4, 3, 1))
			Expect(res.FailedBy).To(Equal(map[string]int64{"wrong": 1}))
		})

		It("UDP: expects every datagram back as it was sent", func() {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			defer pc.Close()
			go func() {
				buf := make([]byte, 64)
				for i := 0; ; i++ {
					n, addr, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					if i != 1 { // the second one is lost
						pc.WriteTo(buf[:n], addr)
					}
				}
			}()
			l, err := load.NewUDPEcho(config(1, 5), pc.LocalAddr().String())
			Expect(err).NotTo(HaveOccurred())
			res := runFor(l, 10*time.Second)
			Expect(res).To(MatchFields(5, 4, 1))
			Expect(res.Lost).To(Equal(int64(1)))
			Expect(l.LostAt()).To(HaveLen(1))
		})
	})

	It("stop when their context ends", func() {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, proto.HTTPBody(0, r.URL.Query().Get("id")))
		}))
		defer srv.Close()
		cfg := config(1, 0)
		cfg.Rate = 50
		l, err := load.NewHTTP(cfg, srv.Listener.Addr().String(), true)
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.Run(ctx)
		}()
		Eventually(func() int { return len(l.Samples()) }).WithTimeout(5 * time.Second).Should(BeNumerically(">=", 2))
		cancel()
		Eventually(done).WithTimeout(5 * time.Second).Should(BeClosed())
	})
})

var _ = Describe("CheckLines", func() {
	write := func(content string) string {
		path := filepath.Join(GinkgoT().TempDir(), "lines.log")
		Expect(os.WriteFile(path, []byte(content), 0o600)).To(Succeed())
		return path
	}

	It("accepts every line of every writer exactly once, in order", func() {
		res, err := load.CheckLines(write("w=0 n=0 g=0\nw=1 n=0 g=0\nw=0 n=1 g=1\nw=1 n=1 g=1\n"), 2, []uint64{2, 2})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Load).To(MatchFields(4, 4, 0))
		Expect(res.Load.Lost + res.Load.Duplicated).To(BeZero())
		Expect(res.Served).To(Equal(map[int]int64{0: 2, 1: 2}))
	})

	It("counts lost, duplicated, torn and out-of-order lines", func() {
		content := "w=0 n=0 g=0\n" +
			"w=0 n=2 g=0\n" + // n=1 lost
			"w=0 n=2 g=1\n" + // duplicated
			"w=0 n=4 g=1\n" +
			"w=0 n=3 g=1\n" + // out of order
			"w=0 n=5 g=1\n" +
			"w=0 n=6" // torn: no newline
		res, err := load.CheckLines(write(content), 1, []uint64{8})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Load.Sent).To(Equal(int64(8)))
		Expect(res.Load.OK).To(Equal(int64(5)))                           // 0 2 3 4 5
		Expect(res.Load.Lost).To(Equal(int64(3)))                         // 1 6 7
		Expect(res.Load.Duplicated).To(Equal(int64(1)))                   // 2
		Expect(res.Load.FailedBy).To(Equal(map[string]int64{"wrong": 2})) // 3 out of order, 6 torn
	})

	It("counts lines past the reported total as sent", func() {
		res, err := load.CheckLines(write("w=0 n=0 g=0\nw=0 n=1 g=0\n"), 1, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Load).To(MatchFields(2, 2, 0))
	})
})

// MatchFields matches a report.Load's sent, ok and failed counts.
func MatchFields(sent, ok, failed int64) OmegaMatcher {
	return SatisfyAll(
		WithTransform(func(l report.Load) int64 { return l.Sent }, Equal(sent)),
		WithTransform(func(l report.Load) int64 { return l.OK }, Equal(ok)),
		WithTransform(func(l report.Load) int64 { return l.Failed }, Equal(failed)),
	)
}
