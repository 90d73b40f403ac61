//go:build linux

package harness_test

// What the hand-off specs share: the accounting handshake every child goes
// through, the receiving side of a hand-off (dial, take the set, let the
// parent look at it, then serve and say READY), and the sending side (a
// graceful.Server that reports each session to the parent).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// Child side.

// accounted wraps a helper body in the accounting handshake: the child
// says "started" and waits for "go", so that the parent can list its
// descriptors before it opens anything; after the body it says "finished"
// (the body has closed everything it opened) and waits for "exit", so that
// the parent can list them again.
func accounted(body harness.HelperFunc) harness.HelperFunc {
	return func(c *harness.Child) error {
		// The parent inspects us between its commands: wait for them
		// longer than for a reply.
		c.Control.Timeout = time.Minute
		if err := c.Control.Send("started", nil); err != nil {
			return err
		}
		if err := c.Control.Expect("go", nil); err != nil {
			return err
		}
		if err := body(c); err != nil {
			return err
		}
		if err := c.Control.Send("finished", nil); err != nil {
			return err
		}
		return c.Control.Expect("exit", nil)
	}
}

// awaitCommand waits for the parent's next command, which must be typ.
func awaitCommand(c *harness.Child, typ string) error {
	return c.Control.Expect(typ, nil)
}

// outcome is an error as a child reports it: its text, and which of the
// errors the specs look for it matches (errors.Is only works in the
// process that has the error).
type outcome struct {
	Err string
	Is  []string
}

var knownErrors = map[string]error{
	"ErrNoServer":        graceful.ErrNoServer,
	"ErrPeerClosed":      graceful.ErrPeerClosed,
	"ErrUnauthorized":    graceful.ErrUnauthorized,
	"ErrTruncated":       graceful.ErrTruncated,
	"ErrMalformed":       graceful.ErrMalformed,
	"ErrRejected":        graceful.ErrRejected,
	"ErrSenderFailed":    graceful.ErrSenderFailed,
	"ErrBusy":            graceful.ErrBusy,
	"ErrNotReady":        graceful.ErrNotReady,
	"ErrPermission":      os.ErrPermission,
	"DeadlineExceeded":   os.ErrDeadlineExceeded,
	"ErrUnexpectedEOF":   io.ErrUnexpectedEOF,
	"ErrServerClosed":    graceful.ErrServerClosed,
	"ErrMetaTooLarge":    graceful.ErrMetaTooLarge,
	"ErrUnsupportedVers": graceful.ErrUnsupportedVersion,
}

func outcomeOf(err error) outcome {
	if err == nil {
		return outcome{}
	}
	o := outcome{Err: err.Error()}
	for name, target := range knownErrors {
		if errors.Is(err, target) {
			o.Is = append(o.Is, name)
		}
	}
	return o
}

// receivedFD is one descriptor of a received set, as the receiver reports
// it to the parent.
type receivedFD struct {
	Num  int
	Meta graceful.Meta // nil when the sender attached none
}

// receiveSet dials the server at sock and takes one set with ReceiveFrom
// (which acknowledges it but does not say READY), keeping the descriptors
// as they came, and reports them to the parent as "received". The caller
// usually waits for the parent's "serve" (the parent looks at the
// descriptors from the outside meanwhile), starts serving, then calls
// ready.
func receiveSet(c *harness.Child, client *graceful.Client, sock string) (*net.UnixConn, []receivedFD, error) {
	conn, err := client.Dial(sock)
	if err != nil {
		return nil, nil, err
	}
	var set []receivedFD
	err = client.ReceiveFrom(conn, func(fd int, meta io.Reader) error {
		r := receivedFD{Num: fd}
		if meta != nil {
			m, err := graceful.MetaFrom(meta)
			if err != nil {
				return err
			}
			r.Meta = m
		}
		set = append(set, r)
		return nil
	})
	if err != nil {
		conn.Close()
		closeReceived(set)
		return nil, nil, err
	}
	if err := c.Control.Send("received", set); err != nil {
		conn.Close()
		closeReceived(set)
		return nil, nil, err
	}
	return conn, set, nil
}

// receiveOne is what a next generation that takes one descriptor does
// first: receive it from the hand-off socket Args[0], kinds checked, and
// wait for "serve".
func receiveOne(c *harness.Child) (*net.UnixConn, receivedFD, error) {
	conn, set, err := receiveSet(c, &graceful.Client{CheckKinds: true}, c.Args[0])
	if err != nil {
		return nil, receivedFD{}, err
	}
	fail := func(err error) (*net.UnixConn, receivedFD, error) {
		conn.Close()
		closeReceived(set)
		return nil, receivedFD{}, err
	}
	if err := awaitCommand(c, "serve"); err != nil {
		return fail(err)
	}
	if len(set) != 1 {
		return fail(fmt.Errorf("received %d descriptors, want 1", len(set)))
	}
	return conn, set[0], nil
}

func closeReceived(set []receivedFD) {
	for _, r := range set {
		unix.Close(r.Num)
	}
}

// rawFD is the descriptor of a net.Listener, net.Conn or the like.
func rawFD(v any) (int, error) {
	sc, ok := v.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no descriptor", v)
	}
	return harness.RawFD(sc)
}

// ready tells the sender this process serves, and ends the hand-off
// connection.
func ready(conn *net.UnixConn) error {
	err := graceful.Ready(conn)
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// offer serves h on a unix socket at sock and reports the outcome of each
// session to the parent as a "handoff" message. With private, the socket
// is made by ListenAndServe (mode 0600); otherwise it is made here with
// mode 0777, so that any user can reach the server's own check.
func offer(c *harness.Child, sock string, private bool, s *graceful.Server) (stop func() error, err error) {
	done := s.Done
	s.Done = func(err error) {
		if done != nil {
			done(err)
		}
		c.Control.Send("handoff", outcomeOf(err))
	}
	served := make(chan error, 1)
	if private {
		go func() { served <- s.ListenAndServe(sock) }()
		if err := waitForFile(sock, served); err != nil {
			s.Close()
			return nil, err
		}
	} else {
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(sock, 0o777); err != nil {
			ln.Close()
			return nil, err
		}
		go func() { served <- s.Serve(ln) }()
	}
	return func() error {
		s.Close()
		if err := <-served; !errors.Is(err, graceful.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}

// waitForFile waits until ListenAndServe has put its socket at path.
func waitForFile(path string, served chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case err := <-served:
			return err
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("no socket at " + path + " after 10s")
		}
	}
}

// durationArg parses a helper argument such as "300ms"; "" is 0.
func durationArg(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// Parent side.

// child is a helper process with the descriptors it had before its work.
type child struct {
	*harness.Process
	baseline harness.Snapshot
}

// startAccounted starts an accounted helper and lists its descriptors
// before it begins.
func startAccounted(cmd harness.Cmd) *child {
	GinkgoHelper()
	p := harnesstest.Start(cmd)
	harnesstest.Await(p, "started", nil)
	c := &child{Process: p, baseline: harnesstest.Snapshot(p.Pid())}
	harnesstest.Tell(p, "go", nil)
	return c
}

// finish waits for the child's "finished", checks it holds no descriptor
// it did not hold at the start, and lets it exit with status 0.
func (c *child) finish() {
	GinkgoHelper()
	harnesstest.Await(c.Process, "finished", nil)
	harnesstest.ExpectNoneOpened(c.baseline, leakWait)
	harnesstest.Tell(c.Process, "exit", nil)
	harnesstest.ExpectExitSuccess(c.Process, waitExit)
}

func (c *child) tell(typ string, data any) {
	GinkgoHelper()
	harnesstest.Tell(c.Process, typ, data)
}

func (c *child) await(typ string, data any) {
	GinkgoHelper()
	harnesstest.Await(c.Process, typ, data)
}

// fd describes descriptor num of the child.
func (c *child) fd(num int) harness.FD {
	GinkgoHelper()
	return harnesstest.DescribeFD(c.Pid(), num)
}

// describeAll describes descriptors of the child.
func (c *child) describeAll(nums []int) []harness.FD {
	GinkgoHelper()
	fds := make([]harness.FD, len(nums))
	for i, n := range nums {
		fds[i] = c.fd(n)
	}
	return fds
}

// expectReceivedLike checks, from the outside, each descriptor the
// receiver holds against the sender's original as it was before the
// hand-off: the same open file, made close-on-exec by the receiver, and
// still in the blocking mode it had (the mode belongs to the open file,
// which both processes share: a sender that flipped it would show here).
func expectReceivedLike(receiver *child, got []receivedFD, before []harness.FD) {
	GinkgoHelper()
	Expect(got).To(HaveLen(len(before)))
	for i, r := range got {
		fd := receiver.fd(r.Num)
		Expect(fd.ID).To(Equal(before[i].ID), "descriptor %d: receiver has %v, sender had %v", i, fd, before[i])
		Expect(fd.CloseOnExec()).To(BeTrue(), "descriptor %d in the receiver: %v", i, fd)
		Expect(fd.NonBlocking()).To(Equal(before[i].NonBlocking()), "descriptor %d: receiver has %v, sender had %v", i, fd, before[i])
	}
}

// tempDir makes a short directory (unix socket paths are limited) that
// the spec removes at the end.
func tempDir() string {
	GinkgoHelper()
	dir, err := os.MkdirTemp("", "gf")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	return dir
}

// socketIn names the hand-off socket in dir.
func socketIn(dir string) string { return filepath.Join(dir, "handoff.sock") }
