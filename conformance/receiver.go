package conformance

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
	"github.com/gracefulfd/graceful/harness"
)

// receiverScenario describes one run of the implementation as a receiver
// against the suite's own sender.
type receiverScenario struct {
	fixtures func() (fixtureSet, error)
	// prepare runs once the implementation has connected and sent HELLO,
	// before the script (to change the adapter process from outside).
	prepare func(r *receiverRun) error
	// script plays the sender on the connection. It returns what the
	// suite could not do; a write failing because the implementation
	// already gave up is not an error of the suite (the checks see it).
	script func(s *senderScript) error
	// timeout overrides the per-step deadline asked of the implementation.
	timeout time.Duration
	// short: the check waits for the implementation's step deadline to
	// pass: it gets Config.Timeout. Other scenarios ask for a relaxed one
	// (Config.relaxed), which a loaded machine never reaches by accident.
	short bool
	// after runs once the implementation answered receive, before the
	// suite inspects it (to undo what prepare changed).
	after  func(r *receiverRun) error
	ready  bool
	reject *int
	kv     bool
	// challenge makes the suite prove every reported descriptor by a
	// challenge after a successful session.
	challenge bool

	// needs are the adapter features (spec/adapter.md 2.6) the scenario
	// uses; without one, its checks are UNTESTED.
	needs []string
	// request adds fields to the receive request (feature fields).
	request map[string]any
	// listenAs makes the suite's listener belong, for the kernel, to this
	// uid (SO_PEERCRED of the implementation's connection): it needs
	// root. 0 means the suite's own uid.
	listenAs int
	// abstract: the suite listens on a Linux abstract address.
	abstract bool
	// noHello: the script starts at once, without reading the HELLO the
	// implementation may (or may not) send first.
	noHello bool
	// noAccept: the suite never accepts, and fills its listener's backlog
	// first, so that the implementation's connect cannot complete (TRN-8).
	noAccept bool
	// frames bounds how many frames the suite reads back after the
	// script; 0 means 8.
	frames int
}

// senderScript is what a receiver scenario's script has at hand.
type senderScript struct {
	p   *wirePeer
	set fixtureSet
	run *receiverRun
	ln  *net.UnixListener
	e   *env
}

// acceptAgain closes the connection and takes the implementation's next
// one, reading its HELLO (a receiver that tries again).
func (s *senderScript) acceptAgain() error {
	s.p.close()
	conn, err := acceptWithin(s.ln, s.e.cfg.wait())
	if err != nil {
		return err
	}
	s.p = newWirePeer(conn, s.e.cfg.wait())
	s.run.connections++
	f, err := s.p.readFrame()
	if err != nil {
		return fmt.Errorf("HELLO on connection %d: %w", s.run.connections, err)
	}
	if f.Header.Type != wire.TypeHello {
		return fmt.Errorf("connection %d began with %v, not HELLO", s.run.connections, f.Header.Type)
	}
	return nil
}

// welcome is the WELCOME frame for version 1.
func welcome() []byte { return wire.AppendWelcome(nil, 1) }

// batch is one BATCH frame for the records of set.
func batchOf(set fixtureSet) []byte { return wire.AppendBatch(nil, set.records()) }

// endOf is the END frame for count descriptors.
func endOf(count int) []byte { return wire.AppendCount(nil, wire.TypeEnd, uint32(count)) }

// wholeSession is a correct session for set in one sendmsg: WELCOME,
// BATCH frames of at most 252 descriptors each with their descriptors
// attached to the first byte of the write, END.
func (s *senderScript) wholeSession() error {
	if err := s.p.send(welcome()); err != nil {
		return err
	}
	for i := 0; i < len(s.set); i += wire.MaxFdsPerBatch {
		part := s.set[i:min(i+wire.MaxFdsPerBatch, len(s.set))]
		if err := s.p.send(batchOf(part), part.fds()...); err != nil {
			return err
		}
	}
	return s.p.send(endOf(len(s.set)))
}

type receivedDesc struct {
	Fd      int                `json:"fd"`
	Kind    *string            `json:"kind"`
	Meta    *string            `json:"meta"`
	KV      *map[string]string `json:"kv"`
	KVError *string            `json:"kv_error"`
}

type receiveReply struct {
	OK          bool           `json:"ok"`
	Error       *adapterErr    `json:"error"`
	Confirmed   *bool          `json:"confirmed"`
	Descriptors []receivedDesc `json:"descriptors"`
}

// code is the error code the implementation reported, "" on success.
func (r receiveReply) code() string {
	if r.Error == nil {
		return ""
	}
	return r.Error.Code
}

// receiverRun is everything the suite saw in one receiver scenario. The
// scenario only records; the specs judge.
type receiverRun struct {
	suiteErr error // the suite could not set the scenario up
	startErr error // the adapter did not start or failed the handshake
	a        *adapterProc
	set      fixtureSet
	path     string

	connectErr  error // the implementation did not connect
	connections int   // how many connections the suite accepted
	hello       inFrame
	helloRaw    []byte
	helloErr    error

	scriptErr error

	back    []inFrame // frames the implementation wrote after HELLO
	backEnd error     // how its stream ended: nil for end of stream
	viol    []violation

	reply    receiveReply
	replyErr error

	held      []harness.FD            // the adapter's descriptors that are objects the suite sent
	foreign   map[harness.FileID]bool // objects the kernel handed the adapter besides the set (SCM_PIDFD)
	noOption  error                   // the kernel lacks a socket option the scenario wanted
	stray     []harness.FD            // the adapter's descriptors that are foreign objects
	reported  map[int]harness.FD      // what /proc says about each reported fd
	same      []error                 // per reported descriptor: not the suite's description at its index
	challErrs []error
	finishErr error
	stderr    string
	elapsed   time.Duration // from the end of the script to the answer

	// The holder's descriptor table before the receive request and after
	// its answer (runtime descriptors left out).
	tableBefore, tableAfter []harness.FD
	tableErr                error
	notes                   []string
	flags                   []string // what a script saw, by name
}

func (r *receiverRun) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// run executes the scenario.
func (sc receiverScenario) run(e *env) *receiverRun {
	r := &receiverRun{}
	dir, err := tempDir()
	if err != nil {
		r.suiteErr = err
		return r
	}
	defer os.RemoveAll(dir)
	r.path = filepath.Join(dir, "s")
	if sc.abstract {
		r.path = abstractName()
	}
	if sc.listenAs != 0 && !isRoot() {
		r.startErr = errNotRoot
		return r
	}
	ln, err := listenUnixAs(r.path, sc.listenAs, sc.noAccept)
	if err != nil {
		r.suiteErr = err
		return r
	}
	defer ln.Close()
	if sc.fixtures != nil {
		r.set, err = sc.fixtures()
		if err != nil {
			r.suiteErr = err
			return r
		}
	}
	defer r.set.close()
	var blockers []*net.UnixConn
	if sc.noAccept {
		blockers, err = fillBacklog(r.path)
		if err != nil {
			r.suiteErr = err
			return r
		}
		defer func() {
			for _, c := range blockers {
				c.Close()
			}
		}()
	}

	a, err := startAdapter("receiver", e.cfg.Adapter, nil, e.cfg.wait(), e.log())
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
	r.tableBefore, r.tableErr = table(a.holder)

	replies := make(chan error, 1)
	go func() {
		timeout := e.cfg.relaxed()
		if sc.short {
			timeout = e.cfg.timeout()
		}
		if sc.timeout > 0 {
			timeout = sc.timeout
		}
		req := map[string]any{"op": "receive", "socket": r.path, "timeout_ms": ms(timeout),
			"ready": sc.ready, "reject": nil, "kv": sc.kv}
		if sc.reject != nil {
			req["reject"] = *sc.reject
		}
		for k, v := range sc.request {
			req[k] = v
		}
		replies <- a.call(req, "receiveResponse", &r.reply)
	}()

	if sc.noAccept {
		r.replyErr = <-replies
		r.inspect()
		r.finishErr = a.finish()
		return r
	}
	conn, err := acceptWithin(ln, e.cfg.wait())
	if err != nil {
		r.connectErr = err
		r.replyErr = <-replies
		r.finishErr = a.finish()
		return r
	}
	r.connections = 1
	s := &senderScript{p: newWirePeer(conn, e.cfg.wait()), set: r.set, run: r, ln: ln, e: e}
	defer func() { s.p.close() }()

	if !sc.noHello {
		r.hello, r.helloErr = s.p.readFrame()
		if r.helloErr == nil {
			r.helloRaw = wire.AppendHeader(nil, r.hello.Header)
			r.helloRaw = append(r.helloRaw, r.hello.Payload...)
		}
	}
	if r.helloErr == nil && sc.prepare != nil {
		if err := sc.prepare(r); err != nil {
			r.suiteErr = err
		}
	}
	if r.helloErr == nil && r.suiteErr == nil && sc.script != nil {
		r.scriptErr = sc.script(s)
	}
	start := time.Now()
	limit := sc.frames
	if limit == 0 {
		limit = 8
	}
	// Once the adapter answers, the implementation has closed its end:
	// what is left to read is queued already.
	answered := make(chan error, 1)
	go func() {
		err := <-replies
		s.p.cut()
		answered <- err
	}()
	for {
		f, err := s.p.readFrame()
		if err != nil {
			if !closedByPeer(err) {
				r.backEnd = err
			}
			break
		}
		r.back = append(r.back, f)
		if len(r.back) > limit {
			r.backEnd = fmt.Errorf("more than %d frames after HELLO", limit)
			break
		}
	}
	r.viol = s.p.viol
	r.replyErr = <-answered
	r.elapsed = time.Since(start)
	s.p.close()
	if sc.after != nil {
		if err := sc.after(r); err != nil && r.suiteErr == nil {
			r.suiteErr = err
		}
	}

	if r.replyErr == nil {
		r.inspect()
		if sc.challenge && r.reply.OK {
			r.prove()
		}
	}
	r.finishErr = a.finish()
	return r
}

// closedByPeer reports whether a read ended because the implementation
// closed the connection (a close with unread data shows as a reset).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)
}

// errNoFeature marks a scenario that needs a feature the adapter does not
// offer.
type errNoFeature string

func (e errNoFeature) Error() string { return "the adapter does not offer the feature " + string(e) }

func ms(d time.Duration) int { return int(d / time.Millisecond) }

// inspect looks at the adapter's descriptors from outside.
func (r *receiverRun) inspect() {
	var err error
	r.held, err = holding(r.a.holder, r.set.idents())
	if err != nil {
		r.suiteErr = fmt.Errorf("reading /proc/%d/fd: %w", r.a.holder, err)
		return
	}
	if r.tableErr == nil {
		r.tableAfter, r.tableErr = table(r.a.holder)
	}
	if len(r.foreign) > 0 {
		if r.stray, err = holding(r.a.holder, r.foreign); err != nil {
			r.suiteErr = err
			return
		}
	}
	r.reported = map[int]harness.FD{}
	r.same = make([]error, len(r.reply.Descriptors))
	for i, d := range r.reply.Descriptors {
		if p, err := harness.DescribeFD(r.a.holder, d.Fd); err == nil {
			r.reported[d.Fd] = p
		}
		if i < len(r.set) {
			r.same[i] = sameAs(r.set[i], r.a.holder, d.Fd)
		}
	}
}

// sameAs says how the descriptor fd of pid is not the suite's fixture f
// (the same open file description), or nil.
func sameAs(f *fixture, pid, fd int) error {
	ok, err := sameDescription(f.fd, pid, fd)
	switch {
	case err != nil:
		return fmt.Errorf("comparing it with the %s by %s: %w", f.name, identityMethod(), err)
	case !ok:
		return fmt.Errorf("it is not the open file description of the %s (compared by %s)", f.name, identityMethod())
	}
	return nil
}

// prove runs a challenge on every reported descriptor that is one of the
// suite's.
func (r *receiverRun) prove() {
	r.challErrs = make([]error, len(r.reply.Descriptors))
	for i, d := range r.reply.Descriptors {
		f := r.set.byIdent(r.reported[d.Fd].ID)
		if f == nil || f.challenge == nil {
			continue
		}
		r.challErrs[i] = f.challenge(r.a, i)
	}
}

func (s fixtureSet) byIdent(id harness.FileID) *fixture {
	for _, f := range s {
		if f.id == id {
			return f
		}
	}
	return nil
}

// meta decodes a reported metadata field.
func (d receivedDesc) meta() ([]byte, bool, error) {
	if d.Meta == nil {
		return nil, false, nil
	}
	b, err := base64.StdEncoding.DecodeString(*d.Meta)
	return b, true, err
}

// framesOf returns the frames of type t the implementation wrote back.
func (r *receiverRun) framesOf(t wire.Type) []inFrame {
	var out []inFrame
	for _, f := range r.back {
		if f.Header.Type == t {
			out = append(out, f)
		}
	}
	return out
}

// errorCodes returns the codes of the ERROR frames written back.
func (r *receiverRun) errorCodes() []wire.Code {
	var out []wire.Code
	for _, f := range r.framesOf(wire.TypeError) {
		if e, err := wire.ParseError(f.Payload); err == nil {
			out = append(out, e.Code)
		}
	}
	return out
}
