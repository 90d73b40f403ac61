package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// contractVersion is the adapter contract this suite speaks (spec/adapter.md).
const contractVersion = 1

// errAdapter marks a broken adapter run: it exited, wrote garbage, broke
// the contract or did not answer in time.
var errAdapter = errors.New("adapter")

// adapterProc is one running adapter process and its JSON-lines channel.
type adapterProc struct {
	name   string // "sender" or "receiver", for messages
	pid    int    // the adapter process
	holder int    // the process that holds received descriptors (hello's pid)
	proc   *os.Process
	stdin  *os.File
	lines  chan []byte // lines the adapter wrote, closed at end of stdout
	exited chan struct{}
	state  *os.ProcessState
	stderr *tailBuffer
	wait   time.Duration
	seq    int
	hello  helloReply
	broken error // first contract violation; later calls fail with it
}

type helloReply struct {
	OK             bool        `json:"ok"`
	Error          *adapterErr `json:"error"`
	Contract       int         `json:"contract"`
	Implementation string      `json:"implementation"`
	Pid            int         `json:"pid"`
	Features       []string    `json:"features"`
}

// lacks returns errNoFeature for the first of the features needs (and kv,
// when kv) the adapter did not announce.
func (a *adapterProc) lacks(needs []string, kv bool) error {
	if kv {
		needs = append(needs[:len(needs):len(needs)], "kv")
	}
	for _, f := range needs {
		if !a.hello.has(f) {
			return errNoFeature(f)
		}
	}
	return nil
}

func (h helloReply) has(feature string) bool {
	for _, f := range h.Features {
		if f == feature {
			return true
		}
	}
	return false
}

// adapterErr is the error object of a failed response.
type adapterErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *adapterErr) Error() string {
	if e == nil {
		return "<nil>"
	}
	return e.Code + ": " + e.Message
}

// tailBuffer keeps the last bytes written to it (an adapter's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const stderrKeep = 16 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > stderrKeep {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-stderrKeep:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// startAdapter starts command with the descriptors extra at 3, 4, ... and
// runs the hello handshake. It uses syscall.ForkExec with raw descriptor
// numbers: os/exec would call (*os.File).Fd on them, which puts the shared
// open file descriptions in blocking mode and would spoil the checks of
// TRN-9.
//
// It does not use harness.Start, which passes descriptors the same safe
// way, because the adapter contract (spec/adapter.md section 1) needs two
// things harness.Start does not do: requests go to the adapter's stdin
// (harness.Start gives its children /dev/null), and the adapter's process
// group is killed even after the adapter itself has exited, so that a
// descendant holding the received descriptors (which the contract allows)
// does not outlive the scenario (harness.Kill stops signalling the group
// once the leader is reaped).
func startAdapter(name string, command []string, extra []int, wait time.Duration, log io.Writer) (*adapterProc, error) {
	if len(command) == 0 {
		return nil, fmt.Errorf("%w: no adapter command", errAdapter)
	}
	path, err := exec.LookPath(command[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errAdapter, err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	files := []uintptr{inR.Fd(), outW.Fd(), errW.Fd()}
	for _, fd := range extra {
		files = append(files, uintptr(fd))
	}
	pid, err := syscall.ForkExec(path, command, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: files,
		// A group of its own, so that killing it kills what a wrapper
		// script started too.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("%w: start %s: %v", errAdapter, path, err)
	}
	proc, _ := os.FindProcess(pid) // never fails on unix
	a := &adapterProc{
		name: name, pid: pid, holder: pid, proc: proc, stdin: inW,
		lines: make(chan []byte, 4), exited: make(chan struct{}),
		stderr: &tailBuffer{}, wait: wait,
	}
	var sink io.Writer = a.stderr
	if log != nil {
		sink = io.MultiWriter(a.stderr, &prefixWriter{w: log, prefix: "[" + name + " stderr] "})
	}
	stdoutDone := make(chan struct{})
	go func() {
		defer close(stdoutDone)
		defer close(a.lines)
		r := bufio.NewReaderSize(outR, 64<<10)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				a.lines <- line
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		io.Copy(sink, errR)
		errR.Close()
	}()
	go func() {
		a.state, _ = proc.Wait()
		<-stdoutDone
		outR.Close()
		close(a.exited)
	}()
	var hello helloReply
	if err := a.call(map[string]any{"op": "hello", "contracts": []int{contractVersion}}, "helloResponse", &hello); err != nil {
		a.kill()
		return nil, err
	}
	if !hello.OK {
		a.kill()
		return nil, a.fail("hello refused: %v", hello.Error)
	}
	if hello.Contract != contractVersion {
		a.kill()
		return nil, a.fail("hello chose contract %d, the suite speaks %d", hello.Contract, contractVersion)
	}
	if hello.Pid != pid && !isDescendant(hello.Pid, pid) {
		a.kill()
		return nil, a.fail("hello names pid %d, which is neither the adapter (%d) nor a descendant of it", hello.Pid, pid)
	}
	a.hello, a.holder = hello, hello.Pid
	return a, nil
}

// fail records and returns a contract violation.
func (a *adapterProc) fail(format string, args ...any) error {
	err := fmt.Errorf("%w (%s, pid %d): %s", errAdapter, a.name, a.pid, fmt.Sprintf(format, args...))
	if a.broken == nil {
		a.broken = err
	}
	return err
}

// call sends one request and decodes the response, which must carry the
// same seq and match the schema definition def.
func (a *adapterProc) call(req map[string]any, def string, resp any) error {
	return a.callWait(req, def, resp, a.wait)
}

func (a *adapterProc) callWait(req map[string]any, def string, resp any, wait time.Duration) error {
	if a.broken != nil {
		return a.broken
	}
	a.seq++
	req["seq"] = a.seq
	line, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := validate("request", line); err != nil {
		panic(fmt.Sprintf("conformance: the suite built an invalid request %s: %v", line, err))
	}
	// A large request fills the pipe until the adapter reads it: bound
	// that too.
	a.stdin.SetWriteDeadline(time.Now().Add(wait))
	if _, err := a.stdin.Write(append(line, '\n')); err != nil {
		return a.fail("writing %s request: %v", req["op"], err)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case got, ok := <-a.lines:
		if !ok {
			return a.fail("closed stdout instead of answering %s (%s)", req["op"], a.exitText())
		}
		if err := validate(def, got); err != nil {
			return a.fail("answer to %s: %s: %v", req["op"], bytes.TrimSpace(got), err)
		}
		var head struct {
			Seq int `json:"seq"`
		}
		if err := json.Unmarshal(got, &head); err != nil || head.Seq != a.seq {
			return a.fail("answer %s has seq %d, want %d", bytes.TrimSpace(got), head.Seq, a.seq)
		}
		if err := json.Unmarshal(got, resp); err != nil {
			return a.fail("answer to %s: %v", req["op"], err)
		}
		return nil
	case <-timer.C:
		return a.fail("no answer to %s within %v", req["op"], wait)
	}
}

// finish asks the adapter to exit and checks that it answers done and exits
// with status 0: the only ending that counts as success.
func (a *adapterProc) finish() error {
	defer a.kill()
	if a.broken != nil {
		return a.broken
	}
	var resp struct {
		OK    bool        `json:"ok"`
		Done  bool        `json:"done"`
		Error *adapterErr `json:"error"`
	}
	if err := a.call(map[string]any{"op": "exit"}, "exitResponse", &resp); err != nil {
		return err
	}
	if !resp.OK || !resp.Done {
		return a.fail("exit failed: %v", resp.Error)
	}
	a.stdin.Close()
	select {
	case <-a.exited:
	case <-time.After(a.wait):
		return a.fail("answered done but did not exit within %v", a.wait)
	}
	if a.state == nil || !a.state.Success() {
		return a.fail("answered done, then %s", a.exitText())
	}
	for line := range a.lines {
		return a.fail("wrote after done: %s", bytes.TrimSpace(line))
	}
	return nil
}

// kill ends the adapter's process group and reaps it. Safe to call twice.
func (a *adapterProc) kill() {
	select {
	case <-a.exited:
	default:
		syscall.Kill(-a.pid, syscall.SIGKILL)
		syscall.Kill(a.pid, syscall.SIGKILL)
		select {
		case <-a.exited:
		case <-time.After(10 * time.Second):
		}
	}
	syscall.Kill(-a.pid, syscall.SIGKILL) // what its children left behind
	a.stdin.Close()
}

func (a *adapterProc) exitText() string {
	select {
	case <-a.exited:
		if a.state != nil {
			return "exited: " + a.state.String()
		}
		return "exited"
	case <-time.After(100 * time.Millisecond):
		return "still running"
	}
}

// isDescendant reports whether pid descends from ancestor, by /proc ppid.
func isDescendant(pid, ancestor int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			return false
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			return false
		}
		if ppid == ancestor {
			return true
		}
		pid = ppid
	}
	return false
}

// prefixWriter prefixes each line (adapter stderr in the Ginkgo log).
type prefixWriter struct {
	w      io.Writer
	prefix string
	mid    bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	var out []byte
	for len(b) > 0 {
		if !p.mid {
			out = append(out, p.prefix...)
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out = append(out, b...)
			p.mid = true
			break
		}
		out = append(out, b[:i+1]...)
		b = b[i+1:]
		p.mid = false
	}
	_, err := p.w.Write(out)
	return n, err
}
