package conformance

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/harness"
)

// senderScenario describes one run of the implementation as a sender
// against the suite's own receiver(s).
type senderScenario struct {
	fixtures func() (fixtureSet, error)
	// serve overrides the descriptors of the serve request (to name a
	// descriptor that is not open, or to ask for key-value metadata).
	serve func(r *senderRun) []map[string]any
	kv    bool
	// script plays the receiver(s) once the implementation serves.
	script func(s *receiverScript)
	// timeout overrides the per-step deadline asked of the implementation.
	timeout time.Duration
	// short: the check waits for the implementation's step deadline to
	// pass: it gets Config.Timeout. Other scenarios ask for a relaxed one
	// (Config.relaxed), which a loaded machine never reaches by accident.
	short bool
	// dialer connects the script's receivers; nil means as the suite's
	// own user.
	dialer func(path string) (*net.UnixConn, error)

	// needs are the adapter features the scenario uses; request adds
	// fields to the serve request.
	needs   []string
	request map[string]any
	// root: the scenario needs root (it connects as another user).
	root bool
	// abstract: serve on a Linux abstract address.
	abstract bool
	// dirMode, when not 0, is set on the socket's directory before serve
	// (so that other users can reach what the implementation creates).
	dirMode os.FileMode
	// before runs before serve, with the socket path (to put something
	// there, or to watch the directory); its error fails the scenario.
	before func(r *senderRun) error
	// dial: instead of serve, the suite listens at the path (as
	// listenAs, when not 0) and asks the implementation to connect to it
	// and send (feature dial); the script's dial accepts that connection,
	// and its result is the answer to send.
	dial     bool
	listenAs int
}

// receiverScript is what a sender scenario's script has at hand.
type receiverScript struct {
	e      *env
	run    *senderRun
	dialer func(path string) (*net.UnixConn, error)
}

type resultReply struct {
	OK      bool        `json:"ok"`
	Outcome string      `json:"outcome"`
	Error   *adapterErr `json:"error"`
}

// outcome is one result the suite asked for.
type outcome struct {
	reply resultReply
	err   error // the adapter did not answer (in time)
	took  time.Duration
}

// senderRun is everything the suite saw in one sender scenario.
type senderRun struct {
	suiteErr error
	startErr error
	a        *adapterProc
	set      fixtureSet
	path     string

	serveErr   error // the adapter did not answer serve
	serveReply struct {
		OK    bool        `json:"ok"`
		Error *adapterErr `json:"error"`
	}
	sessions []*sessionLog
	results  []outcome

	flagsBefore, flagsAfter []int
	socketMode              os.FileMode
	socketErr               error
	notes                   []string         // what the script saw besides sessions
	checks                  map[string]error // named checks the script made
	finishErr               error
	stderr                  string
	// fdNums are the descriptor numbers the adapter inherited the set at,
	// in set order: scrambled, so that the order of the numbers is not
	// the order of the set.
	fdNums []int
	// The adapter's descriptor table (runtime descriptors left out) and
	// thread count once it serves, and after the script.
	tableBefore, tableAfter     []harness.FD
	threadsBefore, threadsAfter int
	tableErr                    error
	// watch is what the scenario's before hook left to look at later;
	// afterServe runs once serve is answered.
	watch      any
	afterServe []func()
	// sent is the answer to send, for a scenario in which the
	// implementation dials (sc.dial).
	sent chan outcome
	// counts are numbers a script measured, by name.
	counts map[string]int
	// stuffed is the object a script pushes at the sender (SND-9).
	stuffed *fixture
}

func (sc senderScenario) run(e *env) *senderRun {
	r := &senderRun{checks: map[string]error{}}
	dir, err := tempDir()
	if err != nil {
		r.suiteErr = err
		return r
	}
	defer os.RemoveAll(dir)
	r.path = filepath.Join(dir, "s")
	if sc.fixtures != nil {
		if r.set, err = sc.fixtures(); err != nil {
			r.suiteErr = err
			return r
		}
	}
	defer r.set.close()
	for _, f := range r.set {
		fl, err := statusFlags(f.fd)
		if err != nil {
			r.suiteErr = err
			return r
		}
		r.flagsBefore = append(r.flagsBefore, fl)
	}

	if (sc.root || sc.listenAs != 0) && !isRoot() {
		r.startErr = errNotRoot
		return r
	}
	if sc.abstract {
		r.path = abstractName()
	}
	// The set goes to the adapter at scrambled numbers: set[i] at
	// fdNums[i].
	perm := scramble(len(r.set))
	extra := make([]int, len(r.set))
	for i, f := range r.set {
		extra[perm[i]] = f.fd
		r.fdNums = append(r.fdNums, 3+perm[i])
	}
	defer func() {
		if r.stuffed != nil {
			r.stuffed.close()
		}
	}()
	a, err := startAdapter("sender", e.cfg.Adapter, extra, e.cfg.wait(), e.log())
	if err != nil {
		r.startErr = err
		return r
	}
	r.a = a
	defer func() { r.stderr = a.stderr.String() }()
	defer a.kill()
	if err := a.lacks(sc.needs, sc.kv); err != nil {
		r.startErr = err
		return r
	}
	if sc.dirMode != 0 {
		if err := os.Chmod(dir, sc.dirMode); err != nil {
			r.suiteErr = err
			return r
		}
	}
	if sc.before != nil {
		if err := sc.before(r); err != nil {
			r.suiteErr = err
			return r
		}
	}

	var descs []map[string]any
	if sc.serve != nil {
		descs = sc.serve(r)
	} else {
		descs = r.serveDescriptors()
	}
	timeout := e.cfg.relaxed()
	if sc.short {
		timeout = e.cfg.timeout()
	}
	if sc.timeout > 0 {
		timeout = sc.timeout
	}
	req := map[string]any{"op": "serve", "socket": r.path, "descriptors": descs,
		"timeout_ms": ms(timeout), "ready_timeout_ms": ms(timeout)}
	for k, v := range sc.request {
		req[k] = v
	}
	if sc.dial {
		r.dialScript(e, sc, req, timeout)
		for _, f := range r.set {
			fl, _ := statusFlags(f.fd)
			r.flagsAfter = append(r.flagsAfter, fl)
		}
		r.finishErr = a.finish()
		return r
	}
	r.serveErr = a.call(req, "serveResponse", &r.serveReply)
	for _, f := range r.afterServe {
		f()
	}
	if r.serveErr == nil && r.serveReply.OK {
		if !sc.abstract {
			if st, err := os.Stat(r.path); err != nil {
				r.socketErr = err
			} else {
				r.socketMode = st.Mode()
			}
		}
		r.tableBefore, r.tableErr = table(a.holder)
		r.threadsBefore, _ = threads(a.holder)
		if sc.script != nil {
			dialer := sc.dialer
			if dialer == nil {
				dialer = dialUnix
			}
			sc.script(&receiverScript{e: e, run: r, dialer: dialer})
		}
		if r.tableErr == nil {
			r.tableAfter, r.tableErr = table(a.holder)
		}
	}
	for _, f := range r.set {
		fl, _ := statusFlags(f.fd)
		r.flagsAfter = append(r.flagsAfter, fl)
	}
	r.finishErr = a.finish()
	return r
}

// serveDescriptors describes the set for serve: each at its number in the
// adapter, with its kind and metadata.
func (r *senderRun) serveDescriptors() []map[string]any {
	return serveDescriptorsAt(r.set, r.fdNums)
}

// serveDescriptorsAt describes set for serve, set[i] at nums[i].
func serveDescriptorsAt(set fixtureSet, nums []int) []map[string]any {
	out := []map[string]any{}
	for i, f := range set {
		d := map[string]any{"fd": nums[i], "kind": f.kind.String(), "meta": nil}
		if f.hasMeta {
			d["meta"] = base64.StdEncoding.EncodeToString(f.meta)
		}
		out = append(out, d)
	}
	return out
}

// scramble is a fixed permutation of 0..n-1 that is not in order (for n
// over 2): descriptor numbers that do not ascend with the set.
func scramble(n int) []int {
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	if n < 2 {
		return perm
	}
	// Reverse, then swap neighbours: neither ascending nor descending.
	for i := 0; i < n/2; i++ {
		perm[i], perm[n-1-i] = perm[n-1-i], perm[i]
	}
	for i := 0; i+1 < n; i += 3 {
		perm[i], perm[i+1] = perm[i+1], perm[i]
	}
	return perm
}

// dialScript runs a scenario in which the implementation connects to the
// suite and sends (feature dial).
func (r *senderRun) dialScript(e *env, sc senderScenario, req map[string]any, timeout time.Duration) {
	ln, err := listenUnixAs(r.path, sc.listenAs, false)
	if err != nil {
		r.suiteErr = err
		return
	}
	defer ln.Close()
	r.tableBefore, r.tableErr = table(r.a.holder)
	r.threadsBefore, _ = threads(r.a.holder)
	req["op"] = "send"
	delete(req, "max_pending")
	r.sent = make(chan outcome, 1)
	go func() {
		var o outcome
		start := time.Now()
		o.err = r.a.call(req, "sendResponse", &o.reply)
		o.took = time.Since(start)
		r.sent <- o
	}()
	r.serveReply.OK = true
	accepted := false
	dialer := func(string) (*net.UnixConn, error) {
		if accepted {
			return nil, errorString("the implementation dials once")
		}
		accepted = true
		return acceptWithin(ln, e.cfg.wait())
	}
	if sc.script != nil {
		sc.script(&receiverScript{e: e, run: r, dialer: dialer})
	}
	if !accepted {
		// The answer to send comes only once its connection ends.
		if c, err := dialer(""); err == nil {
			c.Close()
		}
	}
	if r.sent != nil {
		// The script did not ask: the request must be answered before
		// the next one (exit).
		r.results = append(r.results, <-r.sent)
		r.sent = nil
	}
	if r.tableErr == nil {
		r.tableAfter, r.tableErr = table(r.a.holder)
	}
}

// note records something the script saw.
func (s *receiverScript) note(format string, args ...any) {
	s.run.notes = append(s.run.notes, fmt.Sprintf(format, args...))
}

// dial connects to the implementation's socket.
func (s *receiverScript) dial() (*wirePeer, error) {
	c, err := s.dialer(s.run.path)
	if err != nil {
		s.note("dial: %v", err)
		return nil, err
	}
	return newWirePeer(c, s.e.cfg.wait()), nil
}

// result asks the adapter for the outcome of the next finished connection.
func (s *receiverScript) result() outcome {
	var o outcome
	if s.run.sent != nil {
		o = <-s.run.sent
		s.run.sent = nil
	} else {
		start := time.Now()
		o.err = s.run.a.call(map[string]any{"op": "result"}, "resultResponse", &o.reply)
		o.took = time.Since(start)
	}
	s.run.results = append(s.run.results, o)
	return o
}

// hello1 is a HELLO for versions 1 to 1.
func hello1() []byte { return wire.AppendHello(nil, wire.Hello{MinVersion: 1, MaxVersion: 1}) }

// sessionLog is what the suite, as a receiver, read in one session.
type sessionLog struct {
	frames   []inFrame
	end      error // how reading stopped: nil at END, or why not
	viol     []violation
	welcome  int // version, -1 when none
	records  []wire.Record
	fds      []arrived
	idents   []harness.FileID
	endCount int // -1 when no END
	errFrame *wire.ErrorFrame
	received int   // descriptors received on the connection, all told
	eof      error // after the suite's last frame: nil when the implementation closed
	// same, per descriptor received: how it is not the open file
	// description of the set's descriptor at its index, or nil.
	same []error
}

// readSet reads WELCOME, BATCH frames and END (or an ERROR), checking
// every byte against the spec.
func (s *receiverScript) readSet(p *wirePeer) *sessionLog {
	l := &sessionLog{welcome: -1, endCount: -1}
	s.run.sessions = append(s.run.sessions, l)
	defer func() {
		l.viol = append(l.viol, p.viol...)
		p.viol = nil
		l.received = len(p.received)
	}()
	for {
		f, err := p.readFrame()
		if err != nil {
			l.end = err
			return l
		}
		l.frames = append(l.frames, f)
		switch t := f.Header.Type; {
		case t == wire.TypeError:
			ef, err := wire.ParseError(f.Payload)
			if err != nil {
				p.violate("FRM-4", "ERROR payload: %v", err)
			}
			l.errFrame = &ef
			l.end = fmt.Errorf("ERROR %v: %s", ef.Code, ef.Message)
			return l
		case t == wire.TypeWelcome && len(l.frames) == 1:
			v, err := wire.ParseWelcome(f.Payload)
			if err != nil {
				p.violate("FRM-4", "WELCOME: %v", err)
			}
			l.welcome = int(v)
		case len(l.frames) == 1:
			p.violate("SND-1", "the first frame after HELLO is %v, not WELCOME", t)
			l.end = fmt.Errorf("no WELCOME")
			return l
		case t == wire.TypeBatch:
			recs, err := wire.ParseBatch(f.Payload, int(f.Header.NFds))
			if err != nil {
				p.violate("FRM-1", "BATCH at offset %d: %v", f.Offset, err)
				l.end = err
				return l
			}
			for i, rec := range recs {
				rec.Meta = append([]byte(nil), rec.Meta...)
				l.records = append(l.records, rec)
				l.fds = append(l.fds, f.Fds[i])
				id, err := harness.FileIDOf(f.Fds[i].fd)
				if err != nil {
					p.violate("SND-2", "descriptor %d received: %v", len(l.fds)-1, err)
				}
				l.idents = append(l.idents, id)
				if idx := len(l.fds) - 1; idx < len(s.run.set) {
					l.same = append(l.same, sameAs(s.run.set[idx], os.Getpid(), f.Fds[i].fd))
				} else {
					l.same = append(l.same, fmt.Errorf("descriptor %d is beyond the set", idx))
				}
			}
		case t == wire.TypeEnd:
			n, err := wire.ParseCount(f.Payload)
			if err != nil {
				p.violate("FRM-4", "END: %v", err)
			}
			l.endCount = int(n)
			if int(n) != len(l.records) {
				p.violate("SND-1", "END counts %d, the BATCH frames carried %d", n, len(l.records))
			}
			return l
		default:
			p.violate("SND-1", "%v frame in the middle of the set", t)
			l.end = fmt.Errorf("unexpected %v", t)
			return l
		}
	}
}

// finishSession sends ack (nil: nothing) and, if ready, READY, then
// reads until the implementation closes.
func (s *receiverScript) finishSession(p *wirePeer, l *sessionLog, ack []byte, ready bool) {
	if ack != nil {
		if err := p.send(ack); err != nil {
			s.note("sending ACK: %v", err)
		}
	}
	if ready {
		if err := p.send(wire.AppendReady(nil)); err != nil {
			s.note("sending READY: %v", err)
		}
	}
	p.closeWrite()
	// The implementation closes once it reads the end of the stream; the
	// result the script asks next says when it has (no need to wait long
	// here: a connection it leaked shows in its descriptor table).
	p.cut()
	l.eof = p.expectEOF()
	l.received = len(p.received)
}

// goodOne is the script of one good session and its result.
func goodOne(s *receiverScript) {
	s.goodSession()
	s.result()
}

// open connects, says HELLO and reads the set: the start of most of the
// scripts' sessions. p is nil when the connection failed (noted).
func (s *receiverScript) open() (p *wirePeer, l *sessionLog) {
	p, err := s.dial()
	if err != nil {
		return nil, nil
	}
	if err := p.send(hello1()); err != nil {
		s.note("sending HELLO: %v", err)
	}
	return p, s.readSet(p)
}

// goodSession runs a whole correct receiver session on a new connection:
// HELLO, the set, ACK and READY, then closes.
func (s *receiverScript) goodSession() *sessionLog {
	p, err := s.dial()
	if err != nil {
		l := &sessionLog{welcome: -1, endCount: -1, end: err}
		s.run.sessions = append(s.run.sessions, l)
		return l
	}
	defer p.close()
	if err := p.send(hello1()); err != nil {
		s.note("sending HELLO: %v", err)
	}
	l := s.readSet(p)
	if l.end == nil {
		s.finishSession(p, l, wire.AppendCount(nil, wire.TypeAck, uint32(len(l.records))), true)
	}
	return l
}

// transcript tells what happened, for failure messages.
func (r *senderRun) transcript() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n--- sender run (socket %s) ---\n", r.path)
	if r.a != nil {
		fmt.Fprintf(&b, "adapter pid %d (%s)\n", r.a.pid, r.a.hello.Implementation)
	}
	fmt.Fprintf(&b, "serve: ok=%v error=%v (err %v)\n", r.serveReply.OK, r.serveReply.Error, r.serveErr)
	for i, l := range r.sessions {
		fmt.Fprintf(&b, "session %d: welcome=%d records=%d end count=%d stopped: %v\n", i, l.welcome, len(l.records), l.endCount, l.end)
		for _, f := range l.frames {
			fmt.Fprintf(&b, "  frame at %d: %v\n", f.Offset, f.Header)
		}
		for _, v := range l.viol {
			fmt.Fprintf(&b, "  wire: %v\n", v)
		}
	}
	for i, o := range r.results {
		fmt.Fprintf(&b, "result %d: ok=%v outcome=%q error=%v (err %v, after %v)\n", i, o.reply.OK, o.reply.Outcome, o.reply.Error, o.err, o.took.Round(time.Millisecond))
	}
	for _, n := range r.notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if r.finishErr != nil {
		fmt.Fprintf(&b, "exit: %v\n", r.finishErr)
	}
	if r.stderr != "" {
		fmt.Fprintf(&b, "stderr (tail):\n%s\n", tail(r.stderr, 2000))
	}
	return b.String()
}

// readAll reads frames until end of stream, for scripts that expect an
// ERROR and the close.
func readAll(p *wirePeer) (frames []inFrame, end error) {
	for len(frames) < 8 {
		f, err := p.readFrame()
		if err != nil {
			if closedByPeer(err) {
				return frames, nil
			}
			return frames, err
		}
		frames = append(frames, f)
		if f.Header.Type == wire.TypeError {
			p.cut() // the close is due at once
		}
	}
	return frames, fmt.Errorf("more than 8 frames")
}
