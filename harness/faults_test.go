//go:build linux

package harness_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// Child side.

// crashNew takes the set from the hand-off socket Args[0], acknowledges
// it, and is killed by a signal of its own on "crash", before saying
// READY.
func crashNew(c *harness.Child) error {
	conn, set, err := receiveSet(c, &graceful.Client{}, c.Args[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	defer closeReceived(set)
	if err := awaitCommand(c, "crash"); err != nil {
		return err
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	return errors.New("still alive after SIGKILL")
}

// hangHello connects to the hand-off socket Args[0] and says nothing.
func hangHello(c *harness.Child) error {
	conn, err := net.DialTimeout("unix", c.Args[0], 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := c.Control.Send("connected", nil); err != nil {
		return err
	}
	return commands(c, map[string]func() error{"finish": conn.Close})
}

// hangReady takes the set from the hand-off socket Args[0], acknowledges
// it, and never says READY.
func hangReady(c *harness.Child) error {
	conn, set, err := receiveSet(c, &graceful.Client{}, c.Args[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	defer closeReceived(set)
	return commands(c, map[string]func() error{"finish": func() error { return nil }})
}

// partialSender plays a sender that dies in the middle of a set: on the
// socket Args[0] it answers a receiver's HELLO with WELCOME, a whole BATCH
// of Args[1] descriptors, and the first half of a BATCH of Args[2]
// descriptors (which all travel with its first byte). Then it waits to be
// killed.
func partialSender(c *harness.Child) error {
	full, part := atoi(c.Args[1]), atoi(c.Args[2])
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: c.Args[0], Net: "unix"})
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := c.Control.Send("listening", nil); err != nil {
		return err
	}
	ln.SetDeadline(time.Now().Add(time.Minute))
	conn, err := ln.AcceptUnix()
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(conn, make([]byte, wire.HeaderSize+12)); err != nil {
		return err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	fd, err := rawFD(null)
	if err != nil {
		return err
	}
	copies := func(n int) []int {
		fds := make([]int, n)
		for i := range fds {
			fds[i] = fd
		}
		return fds
	}
	first := wire.AppendBatch(wire.AppendWelcome(nil, wire.Version), make([]wire.Record, full))
	if _, _, err := conn.WriteMsgUnix(first, unix.UnixRights(copies(full)...), nil); err != nil {
		return err
	}
	second := wire.AppendBatch(nil, make([]wire.Record, part))
	half := wire.HeaderSize + part/2*wire.RecordOverhead
	if _, _, err := conn.WriteMsgUnix(second[:half], unix.UnixRights(copies(part)...), nil); err != nil {
		return err
	}
	if err := c.Control.Send("sent", full+part); err != nil {
		return err
	}
	return awaitCommand(c, "never")
}

// setOld offers Args[1] descriptors of /dev/null on the hand-off socket
// Args[0]; Args[2] is "private" for a socket made by ListenAndServe (mode
// 0600), or "open" for one any user can reach.
func setOld(c *harness.Child) error {
	var files []*os.File
	var fds []int
	closeAll := func() error {
		var errs []error
		for _, f := range files {
			errs = append(errs, f.Close())
		}
		return errors.Join(errs...)
	}
	for range atoi(c.Args[1]) {
		f, err := os.Open(os.DevNull)
		if err != nil {
			closeAll()
			return err
		}
		files = append(files, f)
		fd, _ := rawFD(f)
		fds = append(fds, fd)
	}
	stop, err := offer(c, c.Args[0], c.Args[2] == "private", &graceful.Server{
		Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			for _, fd := range fds {
				if err := w.WriteKind(fd, graceful.KindFile, nil); err != nil {
					w.Errorf("%v", err)
					return
				}
			}
		}),
	})
	if err != nil {
		closeAll()
		return err
	}
	if err := c.Control.Send("serving", fds); err != nil {
		stop()
		closeAll()
		return err
	}
	return commands(c, map[string]func() error{
		"finish": func() error { return errors.Join(stop(), closeAll()) },
	})
}

// receiveResult is what a receiver that used graceful.Receive reports.
type receiveResult struct {
	outcome
	Count int // descriptors handed to the callback
}

// receiveAll receives one set from sock with graceful.Receive, keeping
// the descriptors.
func receiveAll(sock string) (receiveResult, []receivedFD) {
	var set []receivedFD
	err := graceful.Receive(sock, func(fd int, _ io.Reader) error {
		set = append(set, receivedFD{Num: fd})
		return nil
	})
	return receiveResult{outcome: outcomeOf(err), Count: len(set)}, set
}

// plainNew receives a set from the hand-off socket Args[0] with
// graceful.Receive, reports how that went, and closes what it got on
// "finish".
func plainNew(c *harness.Child) error {
	result, set := receiveAll(c.Args[0])
	defer closeReceived(set)
	if err := c.Control.Send("result", result); err != nil {
		return err
	}
	return commands(c, map[string]func() error{"finish": func() error { return nil }})
}

// limitedNew is plainNew with its open-file limit lowered so that only a
// couple of descriptors fit.
func limitedNew(c *harness.Child) error {
	fds, err := harness.ListFDs(os.Getpid())
	if err != nil {
		return err
	}
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		return err
	}
	limit := orig
	// Room for the hand-off connection and one descriptor more.
	limit.Cur = uint64(fds[len(fds)-1].Num + 3)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &limit); err != nil {
		return err
	}
	result, set := receiveAll(c.Args[0])
	defer closeReceived(set)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		return err
	}
	if err := c.Control.Send("result", result); err != nil {
		return err
	}
	return commands(c, map[string]func() error{"finish": func() error { return nil }})
}

// Parent side.

// greeting dials a listener helper and returns which generation answered.
func greeting(addr string) string {
	GinkgoHelper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	Expect(err).NotTo(HaveOccurred())
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	Expect(err).NotTo(HaveOccurred())
	return strings.TrimSuffix(line, "\n")
}

// expectStillServing checks that the old generation answers every dial.
func expectStillServing(addr string) {
	GinkgoHelper()
	for range 5 {
		Expect(greeting(addr)).To(Equal("old"))
	}
}

var _ = Describe("hand-off faults", Label("harness"), harnesstest.Repeat(), func() {
	BeforeEach(func() { trackLeaks() })

	// startOld starts a listener helper on tcp, with the given server
	// timeouts.
	startOld := func(sock, timeout, readyTimeout string) (*child, listenerInfo) {
		GinkgoHelper()
		old := startAccounted(harness.Cmd{Helper: "listener-old", Args: []string{"tcp", sock, timeout, readyTimeout}})
		var info listenerInfo
		old.await("serving", &info)
		Expect(greeting(info.Addr)).To(Equal("old"))
		return old, info
	}

	It("keeps serving when the new process crashes after taking the set and before READY, and can hand over again", func() {
		sock := socketIn(tempDir())
		old, info := startOld(sock, "", "")

		crash := harnesstest.Start(harness.Cmd{Helper: "crash-new", Args: []string{sock}})
		var got []receivedFD
		harnesstest.Await(crash, "received", &got)
		Expect(got).To(HaveLen(1))
		crashFD := harnesstest.DescribeFD(crash.Pid(), got[0].Num)
		Expect(crashFD.ID).To(Equal(old.fd(info.FD).ID))
		Expect(crashFD.CloseOnExec()).To(BeTrue())
		harnesstest.Tell(crash, "crash", nil)
		Expect(harnesstest.Wait(crash, waitExit)).To(Equal(harness.Exit{Code: -1, Signal: syscall.SIGKILL}))

		var handoff outcome
		old.await("handoff", &handoff)
		By("the old process says: " + handoff.Err)
		Expect(handoff.Is).To(ContainElement("ErrNotReady"), handoff.Err)
		expectStillServing(info.Addr)

		By("a healthy new process can still take over")
		nu := startAccounted(harness.Cmd{Helper: "listener-new", Args: []string{sock}})
		nu.await("received", &got)
		nu.tell("serve", nil)
		nu.await("serving", nil)
		old.await("handoff", &handoff)
		Expect(handoff).To(Equal(outcome{}))
		old.tell("stop", nil)
		old.await("stopped", nil)
		Expect(greeting(info.Addr)).To(Equal("new"))

		nu.tell("finish", nil)
		nu.finish()
		old.tell("finish", nil)
		old.finish()
	})

	It("gives up on a new process that connects and never speaks, at the deadline, and keeps serving", func() {
		sock := socketIn(tempDir())
		old, info := startOld(sock, "300ms", "")

		hung := startAccounted(harness.Cmd{Helper: "hang-hello", Args: []string{sock}})
		hung.await("connected", nil)
		var handoff outcome
		old.await("handoff", &handoff)
		By("the old process says: " + handoff.Err)
		Expect(handoff.Is).To(ContainElement("DeadlineExceeded"), handoff.Err)
		expectStillServing(info.Addr)

		hung.tell("finish", nil)
		hung.finish()
		old.tell("finish", nil)
		old.finish()
	})

	It("gives up on a new process that takes the set and never says READY, at the deadline, and keeps serving", func() {
		sock := socketIn(tempDir())
		old, info := startOld(sock, "", "300ms")
		oldBefore := old.fd(info.FD)

		hung := startAccounted(harness.Cmd{Helper: "hang-ready", Args: []string{sock}})
		var got []receivedFD
		hung.await("received", &got)
		expectReceivedLike(hung, got, []harness.FD{oldBefore})
		var handoff outcome
		old.await("handoff", &handoff)
		By("the old process says: " + handoff.Err)
		Expect(handoff.Is).To(ContainElement("DeadlineExceeded"), handoff.Err)
		expectStillServing(info.Addr)

		hung.tell("finish", nil)
		hung.finish()
		old.tell("finish", nil)
		old.finish()
	})

	It("closes everything it got when the sender dies in the middle of a set, and says so", func() {
		const full, part = 252, 100
		sock := socketIn(tempDir())
		sender := harnesstest.Start(harness.Cmd{Helper: "partial-sender", Args: []string{sock, strconv.Itoa(full), strconv.Itoa(part)}})
		harnesstest.Await(sender, "listening", nil)

		rcv := startAccounted(harness.Cmd{Helper: "plain-new", Args: []string{sock}})
		var sent int
		harnesstest.Await(sender, "sent", &sent)
		Expect(sent).To(Equal(full + part))
		By("the receiver holds every descriptor sent so far")
		Eventually(harness.CountFDs).WithArguments(rcv.Pid()).Should(BeNumerically(">=", len(rcv.baseline.FDs)+full+part))

		Expect(sender.Kill()).To(Equal(harness.Exit{Code: -1, Signal: syscall.SIGKILL}))
		var result receiveResult
		rcv.await("result", &result)
		By("the new process says: " + result.Err)
		Expect(result.Is).To(ContainElement("ErrPeerClosed"), result.Err)
		Expect(result.Count).To(BeZero(), "no descriptor of an incomplete set is handed to the user")
		rcv.tell("finish", nil)
		rcv.finish()
	})

	It("fails with a clear error, and leaks nothing, when the new process is at its open-file limit", func() {
		sock := socketIn(tempDir())
		old := startAccounted(harness.Cmd{Helper: "set-old", Args: []string{sock, "20", "open"}})
		var sent []int
		old.await("serving", &sent)

		rcv := startAccounted(harness.Cmd{Helper: "limited-new", Args: []string{sock}})
		var result receiveResult
		rcv.await("result", &result)
		By("the new process says: " + result.Err)
		Expect(result.Is).To(ContainElement("ErrTruncated"), result.Err)
		Expect(result.Count).To(BeZero())
		var handoff outcome
		old.await("handoff", &handoff)
		By("the old process says: " + handoff.Err)
		Expect(handoff.Is).To(ContainElement("ErrTruncated"), handoff.Err)
		By("the old process still holds its set")
		for _, fd := range sent {
			Expect(old.fd(fd).Target).To(Equal(os.DevNull))
		}

		rcv.tell("finish", nil)
		rcv.finish()
		old.tell("finish", nil)
		old.finish()
	})

	It("refuses a new process running as another user, and sends it nothing", func() {
		dir := tempDir()
		Expect(os.Chmod(dir, 0o755)).To(Succeed())
		sock := socketIn(dir)
		old := startAccounted(harness.Cmd{Helper: "set-old", Args: []string{sock, "3", "open"}})
		var sent []int
		old.await("serving", &sent)

		rcv := startAccounted(harness.Cmd{Helper: "plain-new", Path: sharedExe, Credential: nobody, Args: []string{sock}})
		var result receiveResult
		rcv.await("result", &result)
		By("the new process says: " + result.Err)
		Expect(result.Is).To(ContainElement("ErrUnauthorized"), result.Err)
		Expect(result.Count).To(BeZero())
		var handoff outcome
		old.await("handoff", &handoff)
		By("the old process says: " + handoff.Err)
		Expect(handoff.Is).To(ContainElement("ErrUnauthorized"), handoff.Err)

		rcv.tell("finish", nil)
		rcv.finish()
		old.tell("finish", nil)
		old.finish()
	})

	It("keeps another user from even reaching a socket made by ListenAndServe", func() {
		dir := tempDir()
		Expect(os.Chmod(dir, 0o755)).To(Succeed())
		sock := socketIn(dir)
		old := startAccounted(harness.Cmd{Helper: "set-old", Args: []string{sock, "3", "private"}})
		var sent []int
		old.await("serving", &sent)
		st, err := os.Stat(sock)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o600)))

		rcv := startAccounted(harness.Cmd{Helper: "plain-new", Path: sharedExe, Credential: nobody, Args: []string{sock}})
		var result receiveResult
		rcv.await("result", &result)
		By("the new process says: " + result.Err)
		Expect(result.Is).To(ContainElement("ErrPermission"), result.Err)
		Expect(result.Count).To(BeZero())

		rcv.tell("finish", nil)
		rcv.finish()
		old.tell("finish", nil)
		old.finish() // fails on a "handoff" message: there was no session
	})
})
