//go:build linux

package graceful_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Mutual authentication: the receiver checks the sender as the sender
// checks the receiver, each from the kernel's credentials of the
// connection, before a byte of the session.
var _ = Describe("a receiver facing a sender of another user", func() {
	refusing := func(addr string, srv *child) {
		GinkgoHelper()
		calls := 0
		err := graceful.Receive(addr, func(fd int, _ io.Reader) error {
			calls++
			return unix.Close(fd)
		})
		Expect(err).To(MatchError(graceful.ErrUnauthorized))
		Expect(err).To(MatchError(ContainSubstring("uid " + strconv.Itoa(otherUser))))
		Expect(calls).To(BeZero(), "no descriptor reached the callback")
		By("the sender heard UNAUTHORIZED where a HELLO was due: the receiver wrote nothing else")
		f := srv.expectLine("done ")
		Expect(f[0]).To(Equal("ErrUnauthorized"), "%v", f)
	}

	It("refuses a listener of another user at the path, before writing HELLO", func() {
		needRoot()
		addr := filepath.Join(publicDir(), "s")
		srv := startChild("serve", asUser(otherUser), addr, "any")
		srv.expectLine("ready")
		refusing(addr, srv)
		srv.stop()
	})

	It("refuses a squatter of an abstract name", func() {
		needRoot()
		addr := abstractAddr()
		srv := startChild("serve", asUser(otherUser), addr, "any")
		srv.expectLine("ready")
		refusing(addr, srv)
		srv.stop()
	})

	It("takes the set when its Authorize accepts the sender's credentials", func() {
		needRoot()
		addr := filepath.Join(publicDir(), "s")
		srv := startChild("serve", asUser(otherUser), addr, "any")
		srv.expectLine("ready")
		var seen []graceful.PeerCred
		client := &graceful.Client{Authorize: func(c graceful.PeerCred) error {
			seen = append(seen, c)
			if c.UID != otherUser {
				return errors.New("not the service's user")
			}
			return nil
		}}
		var set []got
		Expect(client.Receive(addr, collect(&set))).To(Succeed())
		Expect(set).To(HaveLen(1))
		Expect(seen).To(Equal([]graceful.PeerCred{{PID: srv.cmd.Process.Pid, UID: otherUser, GID: otherUser}}))
		Expect(srv.expectLine("done ")[0]).To(Equal("nil"))
		srv.stop()
	})
})

var _ = Describe("a sender in a user namespace where the receiver's user is not mapped", func() {
	It("refuses the receiver, which shows as the overflow uid, even when the sender itself runs as that uid", func() {
		needRoot()
		overflow := readID("/proc/sys/kernel/overflowuid")
		overflowGID := readID("/proc/sys/kernel/overflowgid")
		addr := filepath.Join(publicDir(), "s")
		attr := &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWUSER,
			// Inside, the server runs as the overflow ids (mapped to
			// otherUser outside); root, outside, has no mapping there.
			UidMappings: []syscall.SysProcIDMap{{ContainerID: overflow, HostID: otherUser, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: overflowGID, HostID: otherUser, Size: 1}},
			Credential:  &syscall.Credential{Uid: uint32(overflow), Gid: uint32(overflowGID), NoSetGroups: true},
		}
		srv := startChildOrSkip("serve", attr, addr, "default")
		srv.expectLine("ready")

		calls := 0
		client := &graceful.Client{Authorize: func(graceful.PeerCred) error { return nil }} // take it from otherUser
		err := client.Receive(addr, func(fd int, _ io.Reader) error {
			calls++
			return unix.Close(fd)
		})
		Expect(err).To(MatchError(graceful.ErrUnauthorized))
		Expect(err).To(MatchError(ContainSubstring("peer sent UNAUTHORIZED")), "the sender refused")
		Expect(calls).To(BeZero())
		f := srv.expectLine("done ")
		Expect(f[0]).To(Equal("ErrUnauthorized"), "%v", f)
		Expect(f).To(ContainElement("overflow"), "the sender says why")
		srv.stop()
	})
})

func readID(path string) int {
	GinkgoHelper()
	b, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(string(b[:len(b)-1]))
	Expect(err).NotTo(HaveOccurred())
	return n
}

// startChildOrSkip is startChild for a child the kernel may refuse to
// create (user namespaces can be turned off): the spec is skipped then.
func startChildOrSkip(name string, attr *syscall.SysProcAttr, args ...string) *child {
	GinkgoHelper()
	exe, err := sharedExe()
	Expect(err).NotTo(HaveOccurred())
	probe := &syscall.SysProcAttr{Cloneflags: attr.Cloneflags, UidMappings: attr.UidMappings, GidMappings: attr.GidMappings}
	p, err := os.StartProcess(exe, []string{exe}, &os.ProcAttr{Env: []string{helperEnv + "=none"}, Sys: probe})
	if err != nil {
		Skip("the kernel refuses a user namespace here: " + err.Error())
	}
	p.Wait()
	return startChild(name, attr, args...)
}

var _ = Describe("a Client's Authorize", func() {
	It("sees the sender's pid, uid and gid, and a refusal tells the sender UNAUTHORIZED before HELLO", func() {
		var seen graceful.PeerCred
		client := &graceful.Client{Authorize: func(c graceful.PeerCred) error {
			seen = c
			return errors.New("not this one")
		}}
		err, handed := receiveAgainst(client, func(p *rawPeer) {
			p.expectError(wire.CodeUnauthorized) // its first frame: no HELLO before it
		})
		Expect(err).To(MatchError(graceful.ErrUnauthorized))
		Expect(err).To(MatchError(ContainSubstring("not this one")))
		Expect(handed).To(BeZero())
		Expect(seen).To(Equal(graceful.PeerCred{PID: os.Getpid(), UID: os.Geteuid(), GID: os.Getegid()}))
	})
})

var _ = Describe("a Server's Authorize", func() {
	It("sees the receiver's pid, uid and gid", func() {
		var seen graceful.PeerCred
		addr, done := serve(&graceful.Server{
			Handler:   graceful.CallbackHandler(func() {}),
			Authorize: func(c graceful.PeerCred) error { seen = c; return nil },
		})
		Expect(graceful.Receive(addr, func(int, io.Reader) error { return nil })).To(Succeed())
		Eventually(done).Should(Receive(BeNil()))
		Expect(seen).To(Equal(graceful.PeerCred{PID: os.Getpid(), UID: os.Geteuid(), GID: os.Getegid()}))
	})
})
