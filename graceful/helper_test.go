//go:build linux

package graceful_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/graceful/wire"
)

// Some specs need other processes: peers that flood a server, a server of
// another user. The test binary plays them, re-executed with helperEnv
// naming the role (TestMain dispatches); each reports on its standard
// output, one line per event, and runs until its standard input closes.
const helperEnv = "GRACEFUL_TEST_HELPER"

// otherUser is a user and group that no process of these tests runs as,
// and that is not the overflow id.
const otherUser = 4242

var helpers = map[string]func(args []string) error{
	"attack": attackMain,
	"serve":  serveMain,
}

// helperMain runs the helper named by helperEnv and returns the exit
// status.
func helperMain(name string) int {
	run, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no helper %q\n", name)
		return 2
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		return 1
	}
	return 0
}

// child is a helper process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	exit  chan error // its exit status, once
	ended bool
}

// asUser runs a child as another user and group.
func asUser(id int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(id), Gid: uint32(id), NoSetGroups: true}}
}

// needRoot skips a spec that must start processes of other users.
func needRoot() {
	GinkgoHelper()
	if os.Geteuid() != 0 {
		Skip("needs root, to run a process as another user (setuid)")
	}
}

var sharedExe = sync.OnceValues(func() (string, error) {
	// go test builds into a directory only its owner can enter: a child
	// of another user needs a copy it can reach.
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "graceful-exe")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "graceful.test")
	return path, os.WriteFile(path, b, 0o755)
})

var _ = AfterSuite(func() {
	if path, err := sharedExe(); err == nil {
		os.RemoveAll(filepath.Dir(path))
	}
})

// publicDir is a fresh directory every user may create files in, removed
// when the spec ends.
func publicDir() string {
	GinkgoHelper()
	dir, err := os.MkdirTemp("", "gfp")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	Expect(os.Chmod(dir, 0o777)).To(Succeed())
	return dir
}

// startChild runs this binary as the helper name; attr, when not nil,
// sets its credentials or namespaces. It is killed, if still running,
// when the spec ends.
func startChild(name string, attr *syscall.SysProcAttr, args ...string) *child {
	GinkgoHelper()
	exe, err := sharedExe()
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{helperEnv + "=" + name, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = attr
	cmd.Stderr = GinkgoWriter
	stdin, err := cmd.StdinPipe()
	Expect(err).NotTo(HaveOccurred())
	stdout, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(cmd.Start()).To(Succeed())
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), exit: make(chan error, 1)}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
		c.exit <- cmd.Wait()
	}()
	DeferCleanup(func() {
		if !c.ended {
			c.kill()
		}
	})
	return c
}

// kill kills the child and waits for it.
func (c *child) kill() {
	GinkgoHelper()
	c.cmd.Process.Kill()
	c.stdin.Close()
	Eventually(c.exit).WithTimeout(10 * time.Second).Should(Receive())
	c.ended = true
}

// expectLine waits for the child's next line, which must start with
// prefix, and returns its fields after the prefix.
func (c *child) expectLine(prefix string) []string {
	GinkgoHelper()
	var line string
	Eventually(c.lines).WithTimeout(60*time.Second).Should(Receive(&line), "child said nothing more")
	Expect(line).To(HavePrefix(prefix))
	return strings.Fields(strings.TrimPrefix(line, prefix))
}

// stop closes the child's standard input, which ends it, and waits.
func (c *child) stop() {
	GinkgoHelper()
	c.stdin.Close()
	Eventually(c.exit).WithTimeout(30 * time.Second).Should(Receive(BeNil()))
	c.ended = true
}

// attackMain opens args[1] connections to the socket at args[0] and
// treats each as args[2] says:
//
//   - silent: says nothing;
//   - half: sends half of a HELLO header;
//   - trickle: sends a HELLO a byte every 100 ms;
//   - stuff: sends one byte carrying 252 descriptors;
//   - mix: silent, half and trickle in turn.
//
// It reports "ready <connected> <failed> <descriptors refused>" and keeps
// the connections until its standard input closes.
func attackMain(args []string) error {
	addr, mode := args[0], args[2]
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	hello := wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1})
	devnull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	rights := unix.UnixRights(slicesRepeat(devnull, wire.MaxFdsPerBatch)...)
	var (
		trickling      []int
		failed, denied int
		conns          int
	)
	for i := range n {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		// A full backlog makes connect wait: at most this long.
		tv := unix.Timeval{Sec: 5}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
			unix.Close(fd)
			failed++
			continue
		}
		conns++
		m := mode
		if m == "mix" {
			m = []string{"silent", "half", "trickle"}[i%3]
		}
		switch m {
		case "half":
			unix.SendmsgN(fd, hello[:4], nil, nil, unix.MSG_NOSIGNAL)
		case "trickle":
			unix.SendmsgN(fd, hello[:1], nil, nil, unix.MSG_NOSIGNAL)
			trickling = append(trickling, fd)
		case "stuff":
			if _, err := unix.SendmsgN(fd, hello[:1], rights, nil, unix.MSG_NOSIGNAL); errors.Is(err, unix.EPERM) {
				denied++
			}
		}
	}
	fmt.Printf("ready %d %d %d\n", conns, failed, denied)
	stop := make(chan struct{})
	go func() {
		for sent := 2; ; sent = min(sent+1, len(hello)) {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, fd := range trickling {
				unix.SendmsgN(fd, hello[sent-1:sent], nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
			}
		}
	}()
	io.Copy(io.Discard, os.Stdin)
	close(stop)
	return nil
}

func slicesRepeat(v, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// serveMain offers the read end of a pipe on the socket at args[0] with a
// Server, which takes any peer when args[1] is "any", and only its own
// user otherwise. It reports "ready" once the socket is there, "done
// <errors it matches> ..." for every connection Done hears of, and serves
// until its standard input closes.
func serveMain(args []string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	defer w.Close()
	var mu sync.Mutex
	srv := &graceful.Server{
		Handler: graceful.FileHandler(r, nil),
		Done: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Printf("done %s %v\n", errorNames(err), err)
		},
	}
	if args[1] == "any" {
		srv.Authorize = func(graceful.PeerCred) error { return nil }
	}
	ln, err := graceful.Listen(args[0])
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	<-served
	return nil
}

// errorNames lists the package's errors that err matches, "nil" for none.
func errorNames(err error) string {
	if err == nil {
		return "nil"
	}
	var names []string
	for name, target := range map[string]error{
		"ErrUnauthorized": graceful.ErrUnauthorized, "ErrBusy": graceful.ErrBusy,
		"ErrPeerClosed": graceful.ErrPeerClosed, "ErrMalformed": graceful.ErrMalformed,
		"ErrNotReady": graceful.ErrNotReady, "ErrDeadline": os.ErrDeadlineExceeded,
	} {
		if errors.Is(err, target) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "other"
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
