package fdpass_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/internal/fdpass"
)

// numbers returns n distinct ints from base, for parsers that never touch
// the descriptors they read.
func numbers(base, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = base + i
	}
	return s
}

// controlMessages lists the level and type of each control message at the
// start of a freshly zeroed buffer that a read has filled.
func controlMessages(oob []byte) [][2]int32 {
	var msgs [][2]int32
	for {
		h, _, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return msgs
		}
		msgs = append(msgs, [2]int32{h.Level, h.Type})
		oob = rest
	}
}

// carriedPidfd returns the descriptor number of the first SCM_PIDFD
// message in a read's control buffer, or -1.
func carriedPidfd(oob []byte) int {
	for {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return -1
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_PIDFD && len(data) >= 4 {
			return int(*(*int32)(unsafe.Pointer(&data[0])))
		}
		oob = rest
	}
}

var _ = Describe("AppendRights", func() {
	DescribeTable("encodes one SCM_RIGHTS message, as unix.UnixRights does", func(fds []int) {
		Expect(fdpass.AppendRights(nil, fds)).To(Equal(unix.UnixRights(fds...)))
	},
		Entry("1 descriptor", []int{3}),
		Entry("an odd number, padded", []int{3, 4, 5}),
		Entry("252 descriptors", numbers(10, 252)),
	)

	It("appends after what is there, so that messages can follow one another", func() {
		first := fdpass.AppendRights(nil, []int{7})
		b := fdpass.AppendRights(bytes.Clone(first), []int{8, 9})
		Expect(b).To(Equal(append(unix.UnixRights(7), unix.UnixRights(8, 9)...)))
	})

	It("appends nothing for no descriptors", func() {
		Expect(fdpass.AppendRights(nil, nil)).To(BeEmpty())
		Expect(fdpass.AppendRights([]byte("x"), []int{})).To(Equal([]byte("x")))
	})

	It("does not allocate when the buffer has room", func() {
		buf := make([]byte, 0, fdpass.OOBSize)
		fds := numbers(10, 252)
		Expect(testing.AllocsPerRun(10, func() { fdpass.AppendRights(buf, fds) })).To(BeZero())
	})
})

var _ = Describe("Write and Read", func() {
	var (
		a, b *net.UnixConn
		oob  []byte
		p    []byte
	)
	BeforeEach(func() {
		a, b = socketPair()
		oob = make([]byte, fdpass.OOBSize)
		p = make([]byte, 4096)
	})

	It("deliver the data and the descriptors, in order, close-on-exec (TRN-4)", func() {
		sent := memfds(3)
		Expect(cloexec(sent[0])).To(BeFalse(), "test setup: the sent descriptors must not be close-on-exec")
		before := openFds()

		Expect(fdpass.Write(a, []byte("frame"), fdpass.AppendRights(nil, sent))).To(Succeed())
		n, fds, err := fdpass.Read(b, p, oob, []int{-7})
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("frame"))
		Expect(fds).To(HaveLen(4))
		Expect(fds[0]).To(Equal(-7), "Read must append to the descriptors it is given")
		expectSameFiles(fds[1:], sent)
		for _, fd := range fds[1:] {
			Expect(cloexec(fd)).To(BeTrue(), "descriptor %d received without FD_CLOEXEC", fd)
		}
		Expect(openFds()).To(Equal(before + 3))
		closeAll(fds[1:])
	})

	It("deliver data without descriptors", func() {
		Expect(fdpass.Write(a, []byte("plain"), nil)).To(Succeed())
		n, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("plain"))
		Expect(fds).To(BeEmpty())
	})

	It("deliver 252 descriptors in one message, the most a conforming sender puts in one (TRN-7)", func() {
		sent := memfds(252)
		Expect(fdpass.Write(a, []byte{3}, fdpass.AppendRights(nil, sent))).To(Succeed())
		_, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).NotTo(HaveOccurred())
		expectSameFiles(fds, sent)
		closeAll(fds)
	})

	It("take 253 descriptors, Linux's maximum, without truncation, so that RCV-3 can see them", func() {
		sent := memfds(253)
		Expect(fdpass.Write(a, []byte{3}, fdpass.AppendRights(nil, sent))).To(Succeed())
		_, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(fds).To(HaveLen(253))
		closeAll(fds)
	})

	It("give all descriptors, in order, of two SCM_RIGHTS messages in one sendmsg (TRN-6)", func() {
		sent := memfds(5)
		twoMessages := append(unix.UnixRights(sent[:2]...), unix.UnixRights(sent[2:]...)...)
		Expect(fdpass.Write(a, []byte("x"), twoMessages)).To(Succeed())
		_, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).NotTo(HaveOccurred())
		expectSameFiles(fds, sent)
		closeAll(fds)
	})

	Describe("with SO_PASSCRED on the receiver (SCM_CREDENTIALS before SCM_RIGHTS, TRN-6)", func() {
		BeforeEach(func() {
			Expect(setsockopt(b, unix.SO_PASSCRED, 1)).To(Succeed())
		})

		It("still give every descriptor, in order", func() {
			sent := memfds(3)
			Expect(fdpass.Write(a, []byte("x"), fdpass.AppendRights(nil, sent))).To(Succeed())
			_, fds, err := fdpass.Read(b, p, oob, nil)
			Expect(err).NotTo(HaveOccurred())
			expectSameFiles(fds, sent)
			closeAll(fds)

			// The case is real only if the kernel put the credentials first.
			Expect(controlMessages(oob)).To(Equal([][2]int32{
				{unix.SOL_SOCKET, unix.SCM_CREDENTIALS}, {unix.SOL_SOCKET, unix.SCM_RIGHTS}}))
			h, data, _, err := unix.ParseOneSocketControlMessage(oob)
			Expect(err).NotTo(HaveOccurred())
			Expect([]int32{h.Level, h.Type}).To(Equal([]int32{unix.SOL_SOCKET, unix.SCM_CREDENTIALS}))
			cred, err := unix.ParseUnixCredentials(&unix.SocketControlMessage{Header: h, Data: data})
			Expect(err).NotTo(HaveOccurred())
			Expect(int(cred.Pid)).To(Equal(os.Getpid()))
		})

		It("still take a full batch of 252 descriptors without truncation (TRN-7)", func() {
			sent := memfds(252)
			Expect(fdpass.Write(a, []byte{3}, fdpass.AppendRights(nil, sent))).To(Succeed())
			before := openFds()
			_, fds, err := fdpass.Read(b, p, oob, nil)
			Expect(err).NotTo(HaveOccurred(), "OOBSize has no room for SCM_CREDENTIALS next to 252 descriptors")
			expectSameFiles(fds, sent)
			closeAll(fds)
			Expect(openFds()).To(Equal(before))
		})
	})

	It("close a descriptor carried by a control message other than SCM_RIGHTS (TRN-6: SCM_PIDFD)", func() {
		if err := setsockopt(b, unix.SO_PASSPIDFD, 1); errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL) {
			Skip("kernel without SO_PASSPIDFD")
		} else {
			Expect(err).NotTo(HaveOccurred())
		}
		sent := memfds(2)
		before := openFds()
		Expect(fdpass.Write(a, []byte("x"), fdpass.AppendRights(nil, sent))).To(Succeed())
		_, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(closeAll, fds)
		expectSameFiles(fds, sent)
		// The case is real only if the kernel sent a pidfd.
		pidfd := carriedPidfd(oob)
		Expect(pidfd).NotTo(Equal(-1), "no SCM_PIDFD message in %v", controlMessages(oob))
		DeferCleanup(func() {
			// Close a leaked pidfd, so that only this spec fails.
			if link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", pidfd)); err == nil && strings.Contains(link, "pidfd") {
				unix.Close(pidfd)
			}
		})
		Expect(openFds()).To(Equal(before+len(sent)), "the SCM_PIDFD descriptor leaked")
	})

	Describe("on MSG_CTRUNC (TRN-5)", func() {
		DescribeTable("return ErrTruncated and close what arrived",
			func(oobSize int) {
				sent := memfds(5)
				Expect(fdpass.Write(a, []byte("x"), fdpass.AppendRights(nil, sent))).To(Succeed())
				before := openFds()
				_, fds, err := fdpass.Read(b, p, make([]byte, oobSize), []int{-7, -8})
				Expect(err).To(MatchError(fdpass.ErrTruncated))
				Expect(fds).To(Equal([]int{-7, -8}), "Read returned descriptors with ErrTruncated")
				Expect(openFds()).To(Equal(before), "descriptors received in the truncated read leaked")
			},
			Entry("room for 2 of 5", unix.CmsgSpace(2*4)),
			Entry("room for 1 of 5, not padded", unix.CmsgLen(4)),
			Entry("room for a header only", unix.CmsgLen(0)),
			Entry("no control buffer", 0),
		)

		It("do not lose the descriptors of earlier reads", func() {
			first, second := memfds(1), memfds(5)
			Expect(fdpass.Write(a, []byte("1"), fdpass.AppendRights(nil, first))).To(Succeed())
			_, fds, err := fdpass.Read(b, p[:1], oob, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(fdpass.Write(a, []byte("2"), fdpass.AppendRights(nil, second))).To(Succeed())
			_, fds, err = fdpass.Read(b, p[:1], make([]byte, unix.CmsgSpace(2*4)), fds)
			Expect(err).To(MatchError(fdpass.ErrTruncated))
			expectSameFiles(fds, first)
			closeAll(fds)
		})
	})

	It("arrive whole when the data is larger than the socket buffers, descriptors on the first byte", func() {
		const size = 8 << 20
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i>>12)
		}
		var sndbuf, rcvbuf int
		control(a, func(fd int) { sndbuf, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF) })
		control(b, func(fd int) { rcvbuf, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF) })
		Expect(sndbuf+rcvbuf).To(BeNumerically("<", size), "test setup: the write must not fit the buffers")

		type arrival struct {
			offset int
			fds    []int
		}
		type result struct {
			data     []byte
			arrivals []arrival
			err      error
		}
		done := make(chan result, 1)
		go func() {
			var r result
			buf, oob := make([]byte, 64<<10), make([]byte, fdpass.OOBSize)
			for len(r.data) < size && r.err == nil {
				var n int
				var fds []int
				n, fds, r.err = fdpass.Read(b, buf, oob, nil)
				if len(fds) > 0 {
					r.arrivals = append(r.arrivals, arrival{len(r.data), fds})
				}
				r.data = append(r.data, buf[:max(n, 0)]...)
			}
			done <- r
		}()

		sent := memfds(3)
		Expect(fdpass.Write(a, data, fdpass.AppendRights(nil, sent))).To(Succeed())
		var r result
		Eventually(done).WithTimeout(stepTimeout).Should(Receive(&r))
		Expect(r.err).NotTo(HaveOccurred())
		Expect(r.arrivals).To(HaveLen(1), "descriptors came with more than one read")
		Expect(r.arrivals[0].offset).To(BeZero(), "descriptors did not come with the first byte")
		expectSameFiles(r.arrivals[0].fds, sent)
		closeAll(r.arrivals[0].fds)
		Expect(bytes.Equal(r.data, data)).To(BeTrue(), "data differs")
	})

	It("report io.EOF when the peer closes", func() {
		Expect(a.Close()).To(Succeed())
		n, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).To(MatchError(io.EOF))
		Expect(n).To(BeZero())
		Expect(fds).To(BeEmpty())
	})

	It("deliver what was sent before the peer closed, then io.EOF", func() {
		sent := memfds(1)
		Expect(fdpass.Write(a, []byte("last"), fdpass.AppendRights(nil, sent))).To(Succeed())
		Expect(a.Close()).To(Succeed())
		n, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("last"))
		expectSameFiles(fds, sent)
		closeAll(fds)
		_, _, err = fdpass.Read(b, p, oob, nil)
		Expect(err).To(MatchError(io.EOF))
	})

	It("Read returns 0 bytes, not -1, when its deadline passes while it waits", func() {
		// ReadMsgUnix returns n = -1 in this case; a caller that does
		// dec.Commit(n) would panic or drop a byte.
		Expect(b.SetReadDeadline(time.Now().Add(100 * time.Millisecond))).To(Succeed())
		n, fds, err := fdpass.Read(b, p, oob, nil)
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
		Expect(fds).To(BeEmpty())
		Expect(n).To(BeZero())
	})

	It("Write honours the connection's deadline", func() {
		// Nobody reads: the write fills the buffers and must give up.
		Expect(a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))).To(Succeed())
		err := fdpass.Write(a, make([]byte, 8<<20), nil)
		Expect(err).To(MatchError(os.ErrDeadlineExceeded))
	})
})

var _ = Describe("the control-data parser", func() {
	// cmsgLen builds one control message by hand: a header claiming
	// length, the data, padding.
	cmsgLen := func(level, typ int32, length int, data []byte) []byte {
		b := make([]byte, unix.CmsgSpace(len(data)))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(length)
		copy(b[unix.CmsgLen(0):], data)
		return b
	}
	cmsg := func(level, typ int32, data []byte) []byte {
		return cmsgLen(level, typ, unix.CmsgLen(len(data)), data)
	}
	ints := func(fds ...int) []byte {
		return unix.UnixRights(fds...)[unix.CmsgLen(0):unix.CmsgLen(4*len(fds))]
	}

	It("keeps the descriptors of every SCM_RIGHTS message, in order, and skips the others", func() {
		oob := bytes.Join([][]byte{
			cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(1001, 1002)),
			cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMP, make([]byte, 16)),
			cmsg(unix.IPPROTO_IP, unix.SCM_RIGHTS, ints(6666)), // not SOL_SOCKET: not descriptors
			cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(1003)),
		}, nil)
		fds, err := fdpass.AppendFds([]int{-1}, oob)
		Expect(err).NotTo(HaveOccurred())
		Expect(fds).To(Equal([]int{-1, 1001, 1002, 1003}))
	})

	It("reads a last message that has no padding", func() {
		oob := cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(1001))[:unix.CmsgLen(4)]
		fds, err := fdpass.AppendFds(nil, oob)
		Expect(err).NotTo(HaveOccurred())
		Expect(fds).To(Equal([]int{1001}))
	})

	It("takes a message that is a header alone, and goes on to the next", func() {
		oob := bytes.Join([][]byte{
			cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, nil),
			cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(1001)),
		}, nil)
		fds, err := fdpass.AppendFds(nil, oob)
		Expect(err).NotTo(HaveOccurred())
		Expect(fds).To(Equal([]int{1001}))
	})

	It("finds nothing in an empty buffer", func() {
		fds, err := fdpass.AppendFds([]int{5}, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(fds).To(Equal([]int{5}))
	})

	DescribeTable("fails on a broken message, closing what it took from the buffer",
		func(broken func(fds []int) []byte) {
			real := memfds(2)
			dups := make([]int, len(real))
			for i, fd := range real {
				d, err := unix.Dup(fd)
				Expect(err).NotTo(HaveOccurred())
				dups[i] = d
			}
			before := openFds()
			fds, err := fdpass.AppendFds([]int{-1}, broken(dups))
			Expect(err).To(HaveOccurred())
			Expect(fds).To(Equal([]int{-1}))
			Expect(openFds()).To(Equal(before-2), "the descriptors of the good message were not closed")
		},
		Entry("a length shorter than a header", func(fds []int) []byte {
			bad := cmsgLen(unix.SOL_SOCKET, unix.SCM_RIGHTS, unix.CmsgLen(0)-1, nil)
			return append(cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(fds...)), bad...)
		}),
		Entry("a length past the buffer", func(fds []int) []byte {
			bad := cmsgLen(unix.SOL_SOCKET, unix.SCM_RIGHTS, unix.CmsgLen(12), ints(1, 2))
			return append(cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(fds...)), bad...)
		}),
		Entry("a last header alone, whose length runs past the buffer", func(fds []int) []byte {
			bad := cmsgLen(unix.SOL_SOCKET, unix.SCM_RIGHTS, unix.CmsgLen(4), nil)[:unix.CmsgLen(0)]
			return append(cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, ints(fds...)), bad...)
		}),
	)
})
