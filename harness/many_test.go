//go:build linux

package harness_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// manyFDs is the size of the mixed set: several BATCH frames.
const manyFDs = 1000

// Child side.

// mixedSet opens n descriptors of every kind, in turn: TCP listeners, UDP
// sockets, connected unix stream sockets, pipes and regular files in dir.
// The sockets are non-blocking (made by package net), the pipes and files
// blocking, so that the set also shows that nobody changes the mode.
func mixedSet(n int, dir string) (fds []int, kinds []graceful.Kind, closeAll func() error, err error) {
	var closers []io.Closer
	closeAll = func() error {
		var errs []error
		for _, c := range closers {
			errs = append(errs, c.Close())
		}
		return errors.Join(errs...)
	}
	add := func(c io.Closer, kind graceful.Kind) error {
		closers = append(closers, c)
		fd, err := rawFD(c)
		fds, kinds = append(fds, fd), append(kinds, kind)
		return err
	}
	for i := range n {
		var err error
		switch i % 5 {
		case 0:
			var ln net.Listener
			if ln, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
				err = add(ln, graceful.KindListener)
			}
		case 1:
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
				err = add(pc, graceful.KindPacket)
			}
		case 2:
			var pair [2]int
			if pair, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
				closers = append(closers, os.NewFile(uintptr(pair[1]), "peer"))
				err = add(os.NewFile(uintptr(pair[0]), "stream"), graceful.KindStream)
			}
		case 3:
			var p [2]int
			if err = unix.Pipe2(p[:], unix.O_CLOEXEC); err == nil {
				closers = append(closers, os.NewFile(uintptr(p[1]), "pipe writer"))
				err = add(os.NewFile(uintptr(p[0]), "pipe reader"), graceful.KindFile)
			}
		case 4:
			var f *os.File
			if f, err = os.Create(filepath.Join(dir, "file"+strconv.Itoa(i))); err == nil {
				err = add(f, graceful.KindFile)
			}
		}
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
	}
	return fds, kinds, closeAll, nil
}

// manyOld offers a mixed set of Args[1] descriptors, with files in Args[0],
// on the hand-off socket Args[2], each with its index as metadata.
func manyOld(c *harness.Child) error {
	fds, kinds, closeAll, err := mixedSet(atoi(c.Args[1]), c.Args[0])
	if err != nil {
		return err
	}
	stop, err := offer(c, c.Args[2], false, &graceful.Server{
		Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			for i, fd := range fds {
				if err := w.WriteKind(fd, kinds[i], graceful.Meta{"i": strconv.Itoa(i)}); err != nil {
					w.Errorf("descriptor %d: %v", i, err)
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

// manyNew takes a set from the hand-off socket Args[0], checking each
// descriptor's kind, and holds it until "finish".
func manyNew(c *harness.Child) error {
	conn, set, err := receiveSet(c, &graceful.Client{CheckKinds: true}, c.Args[0])
	if err != nil {
		return err
	}
	defer closeReceived(set)
	if err := awaitCommand(c, "serve"); err != nil {
		conn.Close()
		return err
	}
	if err := ready(conn); err != nil {
		return err
	}
	if err := c.Control.Send("serving", nil); err != nil {
		return err
	}
	return commands(c, map[string]func() error{
		"finish": func() error { return nil }, // the deferred close
	})
}

var _ = Describe("handing over many descriptors", Label("harness"), harnesstest.Repeat(), func() {
	BeforeEach(func() { trackLeaks() })

	It("hands over 1000 descriptors of mixed kinds in one set, each the same open file, in order", func() {
		dir := tempDir()
		old := startAccounted(harness.Cmd{Helper: "many-old", Args: []string{dir, strconv.Itoa(manyFDs), socketIn(dir)}})
		var sent []int
		old.await("serving", &sent)
		Expect(sent).To(HaveLen(manyFDs))
		sentBefore := old.describeAll(sent)

		nu := startAccounted(harness.Cmd{Helper: "many-new", Args: []string{socketIn(dir)}})
		var got []receivedFD
		nu.await("received", &got)
		Expect(got).To(HaveLen(manyFDs))
		for i, r := range got {
			Expect(r.Meta).To(Equal(graceful.Meta{"i": strconv.Itoa(i)}), "descriptor %d", i)
		}
		expectReceivedLike(nu, got, sentBefore)
		Expect(harness.CountFDs(nu.Pid())).To(BeNumerically(">=", len(nu.baseline.FDs)+manyFDs))

		nu.tell("serve", nil)
		nu.await("serving", nil)
		var handoff outcome
		old.await("handoff", &handoff)
		Expect(handoff).To(Equal(outcome{}))

		nu.tell("finish", nil)
		nu.finish()
		old.tell("finish", nil)
		old.finish()
	})
})
