//go:build linux

package harness_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/gracefulfd/graceful/harness"
	"github.com/gracefulfd/graceful/harness/harnesstest"
)

// Helpers of the harness's own tests.

// echoHelper answers each message with its data under the type "echo:" +
// its type, until "bye".
func echoHelper(c *harness.Child) error {
	for {
		m, err := c.Control.Recv()
		if err != nil {
			return err
		}
		if m.Type == "bye" {
			return nil
		}
		if err := c.Control.Send("echo:"+m.Type, m.Data); err != nil {
			return err
		}
	}
}

func failHelper(c *harness.Child) error {
	return errors.New("deliberate failure " + strings.Join(c.Args, " "))
}

// hang waits for a message that does not come, for a long time.
func hang(c *harness.Child) error {
	c.Control.Timeout = 10 * time.Minute
	_, err := c.Control.Recv()
	return err
}

func hangHelper(c *harness.Child) error {
	if err := c.Control.Send("hanging", nil); err != nil {
		return err
	}
	return hang(c)
}

// envReport is what envHelper sends.
type envReport struct {
	Environ    []string
	Grandchild []string // the environment a plain os/exec child inherits
	NotCloexec []string // descriptors above 2 a grandchild would inherit
}

func envHelper(c *harness.Child) error {
	out, err := exec.Command("/usr/bin/env").Output()
	if err != nil {
		return err
	}
	fds, err := harness.ListFDs(os.Getpid())
	if err != nil {
		return err
	}
	r := envReport{Environ: os.Environ(), Grandchild: strings.Fields(string(out))}
	for _, fd := range fds {
		if fd.Num > 2 && !fd.CloseOnExec() {
			r.NotCloexec = append(r.NotCloexec, fd.String())
		}
	}
	return c.Control.Send("env", r)
}

// spawnHelper starts two grandchildren that run until killed: a helper
// through the harness (its own process group) and a plain sleep (in this
// process's group), reports their pids and hangs.
func spawnHelper(c *harness.Child) error {
	p, err := harness.Start(harness.Cmd{Helper: "hang"})
	if err != nil {
		return err
	}
	defer p.Kill()
	if err := p.Control().Expect("hanging", nil); err != nil {
		return err
	}
	sleep := exec.Command("/bin/sleep", "600")
	if err := sleep.Start(); err != nil {
		return err
	}
	if err := c.Control.Send("pids", []int{p.Pid(), sleep.Process.Pid}); err != nil {
		return err
	}
	return hang(c)
}

func outputHelper(c *harness.Child) error {
	fmt.Fprintln(os.Stdout, "to stdout")
	fmt.Fprintln(os.Stderr, "to stderr")
	return nil
}

func whoamiHelper(c *harness.Child) error {
	return c.Control.Send("id", []int{os.Getuid(), os.Getgid()})
}

// inheritHelper reports what its descriptor 3 is.
func inheritHelper(c *harness.Child) error {
	fd, err := harness.DescribeFD(os.Getpid(), 3)
	if err != nil {
		return err
	}
	return c.Control.Send("fd", fd)
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

var _ = Describe("harness processes", Label("harness"), harnesstest.Repeat(), func() {
	BeforeEach(func() { harnesstest.TrackLeaks(leakWait) })

	It("runs a named helper and talks to it over the control channel", func() {
		p := harnesstest.Start(harness.Cmd{Helper: "echo"})
		for i := range 3 {
			harnesstest.Tell(p, "ping", i)
			var got int
			harnesstest.Await(p, "echo:ping", &got)
			Expect(got).To(Equal(i))
		}
		harnesstest.Tell(p, "bye", nil)
		harnesstest.ExpectExitSuccess(p, waitExit)
	})

	It("reports a helper's error to the parent, which reads it as ErrPeerFailed", func() {
		p := harnesstest.Start(harness.Cmd{Helper: "fail", Args: []string{"number", "7"}})
		err := p.Control().Expect("never", nil)
		Expect(err).To(MatchError(harness.ErrPeerFailed))
		Expect(err).To(MatchError(ContainSubstring("deliberate failure number 7")))
		Expect(harnesstest.Wait(p, waitExit)).To(Equal(harness.Exit{Code: harness.ExitHelperFailed}))
	})

	It("refuses a helper name the program does not know", func() {
		p := harnesstest.Start(harness.Cmd{Helper: "no-such-helper"})
		err := p.Control().Expect("never", nil)
		Expect(err).To(MatchError(ContainSubstring(`no helper named "no-such-helper"`)))
		Expect(harnesstest.Wait(p, waitExit)).To(Equal(harness.Exit{Code: harness.ExitNoHelper}))
	})

	It("refuses a Cmd with no program", func() {
		_, err := harness.Start(harness.Cmd{})
		Expect(err).To(MatchError(harness.ErrNoProgram))
	})

	It("gives a helper exactly Cmd.Env, and its grandchildren neither the harness's variables nor its descriptors", func() {
		env := []string{"A=1", "PATH=/usr/bin:/bin", "GORACE=atexit_sleep_ms=0"}
		p := harnesstest.Start(harness.Cmd{Helper: "env", Env: env})
		var r envReport
		harnesstest.Await(p, "env", &r)
		Expect(r.Environ).To(Equal(env))
		Expect(r.Grandchild).To(Equal(env))
		Expect(r.NotCloexec).To(BeEmpty())
		harnesstest.ExpectExitSuccess(p, waitExit)
	})

	It("bounds every control read with a deadline", func() {
		p := harnesstest.Start(harness.Cmd{Helper: "hang"})
		err := p.Control().Expect("something else", nil)
		Expect(err).To(MatchError(harness.ErrUnexpected))
		Expect(err).To(MatchError(ContainSubstring(`got "hanging", want "something else"`)))
		p.Control().Timeout = 50 * time.Millisecond
		_, err = p.Control().Recv()
		Expect(err).To(MatchError(harness.ErrTimeout))
		_, exited := p.Exit()
		Expect(exited).To(BeFalse())
	})

	It("reports the end of the control channel when the child exits", func() {
		p := harnesstest.Start(harness.Cmd{Helper: "output"})
		_, err := p.Control().Recv()
		Expect(err).To(MatchError(harness.ErrControlClosed))
		harnesstest.ExpectExitSuccess(p, waitExit)
	})

	It("waits with a deadline without killing, and Kill ends the child and its grandchildren", func() {
		p := harnesstest.Start(harness.Cmd{Helper: "spawn"})
		var pids []int
		harnesstest.Await(p, "pids", &pids)
		Expect(pids).To(HaveLen(2))
		for _, pid := range pids {
			Expect(alive(pid)).To(BeTrue(), "grandchild %d", pid)
		}

		_, err := p.Wait(10 * time.Millisecond)
		Expect(err).To(MatchError(harness.ErrTimeout))
		Expect(alive(p.Pid())).To(BeTrue())

		exit, err := p.Kill()
		Expect(err).NotTo(HaveOccurred())
		Expect(exit).To(Equal(harness.Exit{Code: -1, Signal: syscall.SIGKILL}))
		Expect(p.Signal(syscall.SIGTERM)).To(MatchError(harness.ErrExited))
		for _, pid := range pids {
			Eventually(alive).WithArguments(pid).WithTimeout(waitExit).Should(BeFalse(), "grandchild %d", pid)
		}
		again, err := p.Kill()
		Expect(err).NotTo(HaveOccurred())
		Expect(again).To(Equal(exit))
	})

	It("copies the child's stdout and stderr", func() {
		stdout, stderr := gbytes.NewBuffer(), gbytes.NewBuffer()
		p := harnesstest.Start(harness.Cmd{Helper: "output", Stdout: stdout, Stderr: stderr})
		harnesstest.ExpectExitSuccess(p, waitExit)
		Expect(string(stdout.Contents())).To(Equal("to stdout\n"))
		Expect(string(stderr.Contents())).To(Equal("to stderr\n"))
	})

	It("hands ExtraFiles down as the same open file, without changing their blocking mode", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		defer ln.Close()
		lnFD, err := harness.RawFD(ln.(*net.TCPListener))
		Expect(err).NotTo(HaveOccurred())
		before := harnesstest.DescribeFD(os.Getpid(), lnFD)
		Expect(before.NonBlocking()).To(BeTrue())

		p := harnesstest.Start(harness.Cmd{Helper: "inherit", ExtraFiles: []syscall.Conn{ln.(*net.TCPListener)}})
		var child harness.FD
		harnesstest.Await(p, "fd", &child)
		harnesstest.ExpectExitSuccess(p, waitExit)

		Expect(child.ID).To(Equal(before.ID))
		Expect(child.NonBlocking()).To(BeTrue())
		Expect(child.CloseOnExec()).To(BeFalse(), "an inherited descriptor is not close-on-exec")
		Expect(harnesstest.DescribeFD(os.Getpid(), lnFD)).To(Equal(before))
	})

	It("runs a child as another user", func() {
		p := harnesstest.Start(harness.Cmd{Helper: "whoami", Path: sharedExe, Credential: nobody})
		var id []int
		harnesstest.Await(p, "id", &id)
		Expect(id).To(Equal([]int{int(nobody.Uid), int(nobody.Gid)}))
		harnesstest.ExpectExitSuccess(p, waitExit)
	})

	It("starts any program, with a control channel when asked", func() {
		out := gbytes.NewBuffer()
		p := harnesstest.Start(harness.Cmd{
			Path: "/bin/sh", Args: []string{"-c", `echo "{\"type\":\"fd\",\"data\":$` + harness.ControlEnv + `}" >&$` + harness.ControlEnv + `; echo done`},
			Control: true, Stdout: out,
		})
		var fd int
		harnesstest.Await(p, "fd", &fd)
		Expect(fd).To(Equal(3), "the control descriptor follows the (no) ExtraFiles")
		harnesstest.ExpectExitSuccess(p, waitExit)
		Expect(out).To(gbytes.Say("done"))
	})
})

var _ = Describe("control messages", Label("harness"), harnesstest.Repeat(), func() {
	It("decodes a message's data, and says when it has none", func() {
		m := harness.Msg{Type: "a", Data: json.RawMessage(`[1]`)}
		Expect(m.String()).To(Equal("a [1]"))
		var v []int
		Expect(m.Decode(&v)).To(Succeed())
		Expect(v).To(Equal([]int{1}))
		Expect(harness.Msg{Type: "b"}.Decode(&v)).To(MatchError(ContainSubstring(`"b" message has no data`)))
	})
})
