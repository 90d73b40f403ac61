//go:build linux

package graceful_test

import (
	"io"
	"net"
	"os"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

var _ = Describe("a set larger than one message", func() {
	fdHandler := func(fds []int) graceful.Handler {
		return graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			for i, fd := range fds {
				Expect(w.WriteKind(fd, graceful.KindFile, graceful.Meta{"i": string(rune('a' + i%26))})).To(Succeed())
			}
		})
	}

	It("is split into BATCHes of at most 252 descriptors", func() {
		fds := pipeFds(600)
		addr, done := serve(&graceful.Server{Handler: fdHandler(fds), ReadyTimeout: -1})
		p := dialRaw(addr)
		sizes, _ := batchesOf(p)
		Expect(sizes).To(Equal([]int{252, 252, 96}))
		p.send(wire.AppendCount(nil, wire.TypeAck, 600))
		Eventually(done).Should(Receive(BeNil()))
	})

	It("fills a BATCH up to exactly the payload limit, and starts the next with the record that does not fit", func() {
		// 15 records of 64 KiB of metadata (the most one may carry) and
		// one of 65440 bytes: with their 6-byte headers, exactly 1 MiB.
		fds := pipeFds(17)
		handler := graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			for i, fd := range fds {
				var meta io.WriterTo
				switch {
				case i < 15:
					meta = bytesWriterTo(make([]byte, wire.MaxMetaSize))
				case i == 15:
					meta = bytesWriterTo(make([]byte, wire.MaxPayload-15*(wire.RecordOverhead+wire.MaxMetaSize)-wire.RecordOverhead))
				}
				Expect(w.Write(fd, meta)).To(Succeed())
			}
		})
		addr, done := serve(&graceful.Server{Handler: handler, ReadyTimeout: -1})
		p := dialRaw(addr)
		sizes, lengths := batchesOf(p)
		Expect(sizes).To(Equal([]int{16, 1}))
		Expect(lengths).To(Equal([]uint32{wire.MaxPayload, wire.RecordOverhead}))
		p.send(wire.AppendCount(nil, wire.TypeAck, 17))
		Eventually(done).Should(Receive(BeNil()))
	})

	It("arrives whole and in order: 1000 descriptors", func() {
		fds := pipeFds(1000)
		addr, done := serve(&graceful.Server{Handler: fdHandler(fds)})
		var set []got
		Expect(graceful.Receive(addr, collect(&set))).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(1000))
		for i := range set {
			Expect(set[i].id).To(Equal(identityOf(fds[i])), "descriptor %d", i)
		}
	})

	It("splits batches by size when metadata is large", func() {
		big := make([]byte, wire.MaxMetaSize-100)
		fds := pipeFds(40)
		handler := graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			for _, fd := range fds {
				Expect(w.Write(fd, bytesWriterTo(big))).To(Succeed())
			}
		})
		addr, done := serve(&graceful.Server{Handler: handler})
		var set []got
		Expect(graceful.Receive(addr, collect(&set))).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(set).To(HaveLen(40))
		for _, g := range set {
			Expect(g.meta).To(HaveLen(len(big)))
		}
	})
})

var _ = Describe("a receiver at its open-file limit", Serial, func() {
	It("fails with ErrTruncated, closes what did arrive, and tells the sender", func() {
		fds := pipeFds(20)
		a, b := socketPair()
		defer a.Close()
		defer b.Close()
		p := newRawPeer(b)
		result := make(chan error, 1)
		go func() {
			result <- graceful.ReceiveFrom(a, func(fd int, _ io.Reader) error {
				return os.NewFile(uintptr(fd), "received").Close()
			})
		}()
		p.expect(wire.TypeHello)

		// Leave room for four more descriptors: the kernel installs what
		// fits, drops the rest and sets MSG_CTRUNC.
		open := map[int]bool{}
		for _, name := range openFds() {
			open[atoi(name)] = true
		}
		limit, free := 0, 0
		for ; free < 4; limit++ {
			if !open[limit] {
				free++
			}
		}
		var lim unix.Rlimit
		Expect(unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)).To(Succeed())
		Expect(unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(limit), Max: lim.Max})).To(Succeed())
		restored := false
		restore := func() {
			if !restored {
				restored = true
				Expect(unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)).To(Succeed())
			}
		}
		defer restore()

		batch := wire.AppendBatch(wire.AppendWelcome(nil, 1), records(20))
		p.send(wire.AppendCount(batch, wire.TypeEnd, 20), fds...)
		var err error
		Eventually(result).WithTimeout(5 * time.Second).Should(Receive(&err))
		restore()
		Expect(err).To(MatchError(graceful.ErrTruncated))
		p.expectError(wire.CodeTruncated)
	})
})

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	Expect(err).NotTo(HaveOccurred())
	return n
}

type bytesWriterTo []byte

func (b bytesWriterTo) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}

// batchesOf asks the server at p for its set and returns each BATCH's
// descriptor count and payload length, up to END.
func batchesOf(p *rawPeer) (sizes []int, lengths []uint32) {
	GinkgoHelper()
	p.send(hello())
	p.expect(wire.TypeWelcome)
	for {
		f, err := p.next()
		Expect(err).NotTo(HaveOccurred())
		if f.Header.Type == wire.TypeEnd {
			return sizes, lengths
		}
		Expect(f.Header.Type).To(Equal(wire.TypeBatch))
		sizes = append(sizes, int(f.Header.NFds))
		lengths = append(lengths, f.Header.Length)
	}
}
