// Package handoff measures a whole hand-off of a listening socket to a new
// process: from the moment the old process starts the new one to the
// moment the old one knows the new one holds a net.Listener. These ways
// are compared, each with this same binary as the new process:
//
//   - exec inheritance: the listener's descriptor is passed in
//     exec.Cmd.ExtraFiles, the child makes it a net.Listener and writes a
//     byte on a pipe;
//   - graceful: the child dials the old process's graceful.Server and
//     receives the listener; the server's Done(nil) after READY is the
//     acknowledgement;
//   - tableflip: one cloudflare/tableflip upgrade cycle; Upgrade returning
//     in the old process, after the new one called Ready, is the
//     acknowledgement.
package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/bench/internal/harness"
	"github.com/gracefulfd/graceful/graceful"
)

// Roles of the new process.
const (
	RoleExec      = "handoff-exec"
	RoleGraceful  = "handoff-graceful"
	RoleTableflip = "handoff-tableflip"
)

// addrEnv holds the graceful server's socket path for RoleGraceful.
const addrEnv = "GF_BENCH_ADDR"

// Timeout bounds every wait of a hand-off.
const Timeout = 10 * time.Second

// Roles maps each role to its body, for harness.Main.
var Roles = map[string]func() error{
	RoleExec:      execChild,
	RoleGraceful:  gracefulChild,
	RoleTableflip: tableflipGeneration,
}

// execChild takes the listener at descriptor 3 and acknowledges on the
// pipe at descriptor 4.
func execChild() error {
	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return err
	}
	defer ln.Close()
	ack := os.NewFile(4, "ack")
	defer ack.Close()
	_, err = ack.Write([]byte{1})
	return err
}

// gracefulChild receives the listener; Receive says READY once it is a
// net.Listener.
func gracefulChild() error {
	var ln net.Listener
	err := graceful.Receive(os.Getenv(addrEnv), func(fd int, _ io.Reader) error {
		if ln != nil {
			unix.Close(fd)
			return errors.New("more than one descriptor")
		}
		var err error
		ln, err = graceful.FdListener(fd)
		return err
	})
	if ln != nil {
		defer ln.Close()
	}
	if err != nil {
		return err
	}
	if ln == nil {
		return errors.New("no listener received")
	}
	return nil
}

// Exec hands ln to a child by exec inheritance.
type Exec struct {
	Ln *net.TCPListener
}

// Handoff starts the child and returns when it has acknowledged, and a
// function that waits for the child to exit.
func (e *Exec) Handoff() (wait func() error, err error) {
	f, err := e.Ln.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := command(RoleExec, nil)
	cmd.ExtraFiles = []*os.File{f, w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, err
	}
	r.SetReadDeadline(time.Now().Add(Timeout))
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("waiting for the child's acknowledgement: %w", err)
	}
	return cmd.Wait, nil
}

// Graceful hands a listener to children through a graceful.Server.
type Graceful struct {
	addr   string
	srv    *graceful.Server
	done   chan error
	served chan error
}

// NewGraceful serves ln on a unix socket at addr.
func NewGraceful(addr string, ln net.Listener) *Graceful {
	g := &Graceful{addr: addr, done: make(chan error, 1), served: make(chan error, 1)}
	g.srv = &graceful.Server{
		Handler: graceful.ListenerHandler(ln, nil),
		Timeout: Timeout,
		Done:    func(err error) { g.done <- err },
	}
	return g
}

// Start begins serving; it returns once the socket is listening, created
// the way ListenAndServe creates it (graceful.Listen: 0600, renamed into
// place).
func (g *Graceful) Start() error {
	ln, err := graceful.Listen(g.addr)
	if err != nil {
		return err
	}
	go func() { g.served <- g.srv.Serve(ln) }()
	return nil
}

// Close stops the server.
func (g *Graceful) Close() error {
	err := g.srv.Close()
	if serr := <-g.served; !errors.Is(serr, graceful.ErrServerClosed) {
		return serr
	}
	return err
}

// Handoff starts a child and returns once the server has read its READY.
func (g *Graceful) Handoff() (wait func() error, err error) { return g.handoff(RoleGraceful) }

func (g *Graceful) handoff(role string) (wait func() error, err error) {
	cmd := command(role, []string{addrEnv + "=" + g.addr})
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	select {
	case err = <-g.done:
	case <-time.After(Timeout):
		err = errors.New("no session within the timeout")
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	return cmd.Wait, nil
}

func command(role string, env []string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append([]string{"GF_BENCH_ROLE=" + role, "PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// tableflipGeneration is one generation of a tableflip server. The first
// generation (no parent) listens, says "ready" on stdout, waits for a line
// on stdin, runs one Upgrade and prints how long it took. The second one
// (started by Upgrade with the same role) takes the inherited listener,
// calls Ready, prints "serving PID" and waits for its parent to exit.
func tableflipGeneration() error {
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: Timeout})
	if err != nil {
		return err
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	if upg.HasParent() {
		if err := upg.Ready(); err != nil {
			return err
		}
		fmt.Printf("serving %d\n", os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		return upg.WaitForParent(ctx)
	}
	if err := upg.Ready(); err != nil {
		return err
	}
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	start := time.Now()
	err = upg.Upgrade()
	// Ready closes a channel that tableflip's loop may not have seen yet
	// when Upgrade's request arrives: it answers "not ready", and the
	// next request goes through.
	for tries := 0; err != nil && err.Error() == "process is not ready yet" && tries < 1000; tries++ {
		err = upg.Upgrade()
	}
	took := time.Since(start)
	if err != nil {
		return err
	}
	fmt.Printf("took %d\n", took.Nanoseconds())
	return nil
}

// Tableflip runs upgrade cycles. The process that runs it must be a child
// subreaper (harness.SetSubreaper), since each new generation outlives its parent.
type Tableflip struct{}

// Cycle starts a first generation, lets it upgrade once and returns the
// duration of Upgrade as the old generation measured it, after both
// generations have exited.
func (Tableflip) Cycle() (time.Duration, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer outR.Close()
	cmd := command(RoleTableflip, nil)
	cmd.Stdout = outW
	stdin, err := cmd.StdinPipe()
	if err != nil {
		outW.Close()
		return 0, err
	}
	// The new generation outlives this Cmd, so no Pdeathsig that would
	// follow the thread that started the first one.
	cmd.SysProcAttr = nil
	err = cmd.Start()
	outW.Close()
	if err != nil {
		return 0, err
	}
	defer stdin.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(Timeout)
	next := func() (string, error) {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", io.ErrUnexpectedEOF
			}
			return l, nil
		case <-deadline:
			return "", errors.New("tableflip generation: no answer within the timeout")
		}
	}
	fail := func(err error) (time.Duration, error) {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, err
	}
	if l, err := next(); err != nil || l != "ready" {
		return fail(fmt.Errorf("first generation: %q, %v", l, err))
	}
	if _, err := io.WriteString(stdin, "upgrade\n"); err != nil {
		return fail(err)
	}
	var took time.Duration
	newPid := 0
	for took == 0 || newPid == 0 {
		l, err := next()
		if err != nil {
			return fail(err)
		}
		switch f := strings.Fields(l); {
		case len(f) == 2 && f[0] == "took":
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			took = time.Duration(ns)
		case len(f) == 2 && f[0] == "serving":
			newPid, _ = strconv.Atoi(f[1])
		default:
			return fail(fmt.Errorf("unexpected line %q", l))
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("first generation: %w", err)
	}
	if err := harness.Reap(newPid, Timeout); err != nil {
		return 0, fmt.Errorf("second generation: %w", err)
	}
	return took, nil
}
