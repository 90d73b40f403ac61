//go:build linux

package generation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/control"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/load"
	"github.com/gracefulfd/graceful/cmd/restart-sim/internal/proto"
	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/harness"
)

// Fault modes: what a generation started with Config.Fault does wrong.
const (
	// FaultCrash: exit with ExitCrash right after acknowledging the set,
	// before serving and before READY.
	FaultCrash = "crash"
	// FaultHang: acknowledge the set, then never serve nor say READY.
	FaultHang = "hang"
	// FaultKill: once the set has arrived, tell the supervisor (message
	// control.Receiving) and wait, before acknowledging, to be killed.
	FaultKill = "kill"
)

// Faults lists the fault modes.
var Faults = []string{FaultCrash, FaultHang, FaultKill}

// Exit codes of a generation.
const (
	ExitOK     = 0
	ExitFailed = 1 // an error, printed on stderr
	ExitUsage  = 2
	ExitCrash  = 3 // FaultCrash did what it was asked
	ExitHang   = 4 // FaultHang was never killed: it gave up after FaultWait
)

// idleGrace is the demo's HTTPDrainer.IdleGrace.
const idleGrace = 2 * time.Second

// FaultWait bounds how long a hung or waiting-to-be-killed generation
// waits before giving up by itself.
const FaultWait = time.Minute

// Metadata keys and roles of the descriptors handed over.
const (
	metaRole    = "role"
	metaNext    = "next"
	metaCount   = "count"
	metaPartial = "partial"
	metaPath    = "path"

	roleHTTP           = "http"
	roleStreamListener = "stream-listener"
	roleStream         = "stream"
	roleUDP            = "udp"
	roleLines          = "lines"
	roleExtra          = "extra" // DefectLeak
)

// Config is a generation's settings, from its command line: the same for
// every generation, since the supervisor starts them all alike.
type Config struct {
	// Handoff is the hand-off socket: a new generation takes the set from
	// the one serving there (or, after a crash, from the supervisor's
	// store), then offers its own set there.
	Handoff string
	// Report is restart-sim's report socket (package control).
	Report string
	// FaultFile names the fault (Faults) the next generation to start is to
	// have; the generation that reads it removes it.
	FaultFile string
	// HTTPAddr, StreamAddr and UDPAddr are where a generation that finds
	// nothing to take over (the first one, or one started after a crash
	// without crash safety) binds its sockets.
	HTTPAddr, StreamAddr, UDPAddr string
	// File is the shared append-only file.
	File string
	// ReadyTimeout bounds the wait for a successor's READY.
	ReadyTimeout time.Duration
	// Timeout bounds each step of a hand-off, and each drain step.
	Timeout time.Duration
	// LineWriters and LineRate (lines a second, each) shape the file load.
	LineWriters int
	LineRate    float64
	// Defect is "" or one of Defects: a bug restart-sim must catch.
	Defect string

	fault string // read from FaultFile
	took  bool   // took the set over from a predecessor (not from the store)
}

// service is one generation of the demo service.
type service struct {
	cfg Config
	id  int // the process id: answers and lines name the generation with it
	ctl *control.Reporter

	httpLn, streamLn net.Listener
	udp              net.PacketConn
	lines            *lineWriters

	served map[string]*atomic.Int64

	http       *http.Server
	drainer    *graceful.HTTPDrainer
	httpDone   chan struct{}
	acceptDone chan struct{}
	udpStop    atomic.Bool
	udpDone    chan struct{}

	mu      sync.Mutex
	streams []*stream

	handoff     *graceful.Server
	handoffDone chan struct{}
	session     *session    // the hand-off in progress; guarded by mu
	retiring    atomic.Bool // a successor took over

	// The stream acceptor pauses for a hand-off like the streams do, so
	// that no connection is accepted here once the set has been described.
	acceptPausing atomic.Bool
	acceptPaused  chan struct{}
	acceptResume  chan bool // true: accept again; false: stop, a successor took over

	extras        []*os.File // DefectLeak: descriptors received and handed on
	streamsBroken int        // DefectStreamNotTaken: streams closed on receipt
}

// session is what a hand-off in progress paused.
type session struct {
	streams []*stream
	end     chan struct{} // closed by done
}

func newService(cfg Config, ctl *control.Reporter) *service {
	s := &service{
		cfg:    cfg,
		id:     os.Getpid(),
		ctl:    ctl,
		served: map[string]*atomic.Int64{},

		acceptPaused: make(chan struct{}, 1),
		acceptResume: make(chan bool, 1),
	}
	for _, name := range load.Names {
		s.served[name] = new(atomic.Int64)
	}
	return s
}

// Run is the life of one generation: take over (or create) the
// descriptors, serve, offer them to the next generation, and drain once the
// supervisor says so (SIGTERM on stop). It returns the exit code.
func Run(cfg Config, ctl *control.Reporter, stop <-chan os.Signal) int {
	s := newService(cfg, ctl)
	start := time.Now()
	conn, err := s.receive(stop)
	if errors.Is(err, graceful.ErrNoServer) {
		conn, err = nil, s.create()
	}
	if err == nil && s.cfg.took {
		err = s.misbehave()
	}
	if err != nil {
		return s.fail(err)
	}
	fds, err := harness.CountFDs(os.Getpid())
	if err != nil {
		return s.fail(err)
	}
	// Stream connections come and go with the dialer of the stream load:
	// how many were open at the hand-off varies, so they are not counted;
	// nor is the hand-off connection, which a first start does not have.
	if conn != nil {
		fds--
	}
	if err := s.send(control.Received, control.Message{Fds: fds - len(s.streams)}); err != nil {
		return s.fail(err)
	}

	switch s.cfg.fault {
	case FaultCrash:
		return ExitCrash
	case FaultHang:
		wait(stop, FaultWait)
		return ExitHang
	}

	received := slices.Clone(s.streams) // before serve starts accepting more
	s.serve()
	if conn != nil {
		err := graceful.Ready(conn)
		conn.Close()
		if err != nil {
			return s.fail(fmt.Errorf("say READY: %w", err))
		}
	}
	readyMs := msSince(start)
	s.serveStreamsAndLines(received)
	if err := s.offer(); err != nil {
		return s.fail(err)
	}
	if err := s.store(conn == nil); err != nil {
		return s.fail(err)
	}
	if _, err := graceful.SdNotify(graceful.NotifyReady); err != nil {
		return s.fail(err)
	}
	msg := control.Message{
		HTTPAddr: s.httpLn.Addr().String(), StreamAddr: s.streamLn.Addr().String(),
		UDPAddr: s.udp.LocalAddr().String(), SessionMs: readyMs,
	}
	if err := s.send(control.Ready, msg); err != nil {
		return s.fail(err)
	}

	// A successor that took over does not end this generation: the
	// supervisor stops it (SIGTERM) once the successor has said READY=1 to
	// it too. A hand-off in progress when the signal comes is finished
	// first.
	<-stop
	s.awaitSession()
	if err := s.drain(); err != nil {
		return s.fail(err)
	}
	return ExitOK
}

func (s *service) send(typ string, m control.Message) error {
	return s.ctl.Send(typ, m)
}

func (s *service) fail(err error) int {
	fmt.Fprintf(os.Stderr, "restart-sim: demo service (pid %d): %v\n", s.id, err)
	s.closeAll()
	return ExitFailed
}

// create makes the descriptors of a first start, at the configured
// addresses. The shared file is appended to; the line numbers go on from
// what it holds (nothing on the first start; the lines of a generation that
// crashed, after a crash).
func (s *service) create() error {
	var err error
	if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		return err
	}
	if s.streamLn, err = net.Listen("tcp", s.cfg.StreamAddr); err != nil {
		return err
	}
	if s.udp, err = net.ListenPacket("udp", s.cfg.UDPAddr); err != nil {
		return err
	}
	f, err := os.OpenFile(s.cfg.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return s.takeLines(f, "")
}

// takeLines takes the shared file over, with the next number of each line
// writer: from the metadata of a predecessor, or, when there is none (a
// first start, or the file came from the supervisor's store after a crash),
// from the file itself.
func (s *service) takeLines(f *os.File, next string) error {
	var numbers []uint64
	var err error
	if next != "" {
		numbers, err = parseNext(next, s.cfg.LineWriters)
	} else {
		numbers, err = nextFromFile(s.cfg.File, s.cfg.LineWriters)
	}
	if err != nil {
		f.Close()
		return err
	}
	s.lines = &lineWriters{file: f, gen: s.id, served: s.served[load.File], next: numbers}
	return nil
}

// store puts the listeners, the UDP socket and the shared file in the
// supervisor's descriptor store, so that they outlive a crash of this
// process. Only what this generation created goes there: all of it on a
// first start, and what a defect made anew in place of what it received
// (which it removes from the store first). What was taken over is there
// already.
func (s *service) store(created bool) error {
	for _, st := range []struct {
		name string
		v    syscall.Conn
		new  bool
	}{
		{roleHTTP, s.httpLn.(syscall.Conn), created},
		{roleStreamListener, s.streamLn.(syscall.Conn), created || s.cfg.has(DefectStreamRebind)},
		{roleUDP, s.udp.(syscall.Conn), created || s.cfg.has(DefectUDPNotTaken)},
		{roleLines, s.lines.file, created},
	} {
		if !st.new {
			continue
		}
		if !created {
			if _, err := graceful.SdStoreRemove(st.name); err != nil {
				return err
			}
		}
		if _, err := graceful.SdStore(st.name, st.v); err != nil {
			return err
		}
	}
	return nil
}

// receive takes the set from the generation serving at the hand-off
// socket, or from the supervisor's store there after a crash. It returns
// the hand-off connection, on which READY is still to be said, or an error
// matching graceful.ErrNoServer when nothing is there.
func (s *service) receive(stop <-chan os.Signal) (*net.UnixConn, error) {
	if data, err := os.ReadFile(s.cfg.FaultFile); err == nil && os.Remove(s.cfg.FaultFile) == nil {
		s.cfg.fault = strings.TrimSpace(string(data))
	}
	client := graceful.Client{Timeout: s.cfg.Timeout, CheckKinds: true}
	conn, err := client.Dial(s.cfg.Handoff)
	if err != nil {
		return nil, err
	}
	first := true
	err = client.ReceiveFrom(conn, func(fd int, meta io.Reader) error {
		if first && s.cfg.fault == FaultKill {
			unix.Close(fd)
			if err := s.send(control.Receiving, control.Message{}); err != nil {
				return err
			}
			wait(stop, FaultWait)
			return errors.New("fault kill: was not killed")
		}
		first = false
		return s.take(fd, meta)
	})
	if err == nil && (s.httpLn == nil || s.streamLn == nil || s.udp == nil || s.lines == nil) {
		err = errors.New("the set misses a descriptor")
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("receive from %s: %w", s.cfg.Handoff, err)
	}
	return conn, nil
}

// take is the receive callback: it wraps fd according to its role.
func (s *service) take(fd int, r io.Reader) error {
	meta := graceful.Meta{}
	if r != nil {
		if _, err := meta.ReadFrom(r); err != nil {
			unix.Close(fd)
			return err
		}
	}
	role := meta[metaRole]
	if role != "" {
		s.cfg.took = true
	} else {
		role = meta["name"] // from the supervisor's store
	}
	var err error
	switch role {
	case roleHTTP:
		s.httpLn, err = graceful.FdListener(fd)
	case roleStreamListener:
		s.streamLn, err = graceful.FdListener(fd)
	case roleUDP:
		s.udp, err = graceful.FdPacketConn(fd)
	case roleStream:
		var c net.Conn
		if c, err = graceful.FdConn(fd); err != nil {
			return err
		}
		if s.cfg.has(DefectStreamNotTaken) && s.streamsBroken == 0 {
			s.streamsBroken++
			return c.Close()
		}
		st, err := restoreStream(c, s.id, s.served[load.Stream], meta)
		if err != nil {
			c.Close()
			return err
		}
		st.dropNext = s.cfg.has(DefectStreamDrop)
		st.repeatNext = s.cfg.has(DefectStreamRepeat)
		if s.cfg.has(DefectStreamState) {
			st.count = 0
		}
		s.streams = append(s.streams, st)
	case roleLines:
		return s.takeLines(os.NewFile(uintptr(fd), s.cfg.File), meta[metaNext])
	case roleExtra:
		s.extras = append(s.extras, os.NewFile(uintptr(fd), "extra"))
	default:
		unix.Close(fd)
		return fmt.Errorf("descriptor with unknown role %q", role)
	}
	return err
}

// serve starts what can run beside the old generation: HTTP and UDP on the
// shared sockets, and accepting streams.
func (s *service) serve() {
	mux := http.NewServeMux()
	var requests atomic.Int64 // DefectHTTP*, DefectKeepAliveStatus
	mux.HandleFunc(proto.HTTPPath, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		class, id := q.Get("c"), q.Get("id")
		onConn := r.Context().Value(requestsOnConn{}).(*atomic.Int64).Add(1)
		status := http.StatusOK
		switch {
		case class == load.HTTP && s.cfg.has(DefectHTTPWrong) && nth(requests.Add(1)):
			id += "x"
		case class == load.HTTP && s.cfg.has(DefectHTTPNoAnswer) && nth(requests.Add(1)),
			class == load.KeepAlive && s.cfg.has(DefectKeepAliveAbort) && s.retiring.Load() && onConn > 1:
			abort(w)
			return
		case class == load.KeepAlive && s.cfg.has(DefectKeepAliveStatus) && nth(requests.Add(1)):
			status = http.StatusServiceUnavailable
		}
		if n := s.served[class]; n != nil {
			n.Add(1)
		}
		w.WriteHeader(status)
		io.WriteString(w, proto.HTTPBody(s.id, id))
	})
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: s.cfg.Timeout, ErrorLog: log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, requestsOnConn{}, new(atomic.Int64))
		}}
	s.drainer = graceful.NewHTTPDrainer(s.http)
	// A keep-alive client of the loads sends every few milliseconds: only a
	// machine stalled for this long leaves one idle long enough for the
	// drainer to close its connection (which races with its next request).
	s.drainer.IdleGrace = idleGrace
	s.httpDone = make(chan struct{})
	go func() {
		defer close(s.httpDone)
		s.drainer.Serve(s.httpLn)
	}()

	s.acceptDone = make(chan struct{})
	go s.acceptStreams()
	s.udpDone = make(chan struct{})
	go s.serveUDP()
}

// serveStreamsAndLines starts what only one generation may do at a time:
// reading the handed-over streams and writing lines. It runs once READY is
// said, so that the old generation, paused since it sent the set, is the
// only one to have touched them before. Streams accepted since serve began
// run already.
func (s *service) serveStreamsAndLines(received []*stream) {
	for _, st := range received {
		go st.run()
	}
	s.lines.start(s.cfg.LineRate)
}

func (s *service) acceptStreams() {
	defer close(s.acceptDone)
	for {
		c, err := s.streamLn.Accept()
		if err != nil {
			if !s.acceptPausing.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
				return // closed: draining
			}
			s.acceptPaused <- struct{}{}
			if <-s.acceptResume {
				continue
			}
			return
		}
		st := newStream(c, s.id, s.served[load.Stream])
		s.mu.Lock()
		s.streams = append(s.streams, st)
		s.mu.Unlock()
		go st.run()
	}
}

// serveUDP answers datagrams until stopUDP. A datagram read is always
// answered: stopping only interrupts a read that is waiting, so whatever is
// still queued stays in the shared socket for the next generation.
func (s *service) serveUDP() {
	defer close(s.udpDone)
	buf := make([]byte, 64)
	out := make([]byte, proto.UDPReplySize)
	for n := int64(0); ; n++ {
		size, addr, err := s.udp.ReadFrom(buf)
		if err != nil {
			if s.udpStop.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		reply, err := proto.UDPReply(out, buf[:size], s.id)
		if err != nil || s.cfg.has(DefectUDPDrop) && nth(n) {
			continue
		}
		if s.cfg.has(DefectUDPTwice) && nth(n) {
			s.udp.WriteTo(reply, addr)
		}
		if _, err := s.udp.WriteTo(reply, addr); err == nil {
			s.served[load.UDP].Add(1)
		}
	}
}

// pauseAccept stops the stream acceptor between two accepts, so that every
// stream connection accepted here is in s.streams when a hand-off describes
// them. It does nothing once the acceptor has ended.
func (s *service) pauseAccept() {
	s.acceptPausing.Store(true)
	s.streamLn.(deadliner).SetDeadline(time.Unix(1, 0)) // wakes a pending Accept at once
	select {
	case <-s.acceptPaused:
	case <-s.acceptDone:
	}
}

// resumeAccept ends a pause: keep true accepts again, false ends the
// acceptor (a successor took the listener over).
func (s *service) resumeAccept(keep bool) {
	s.streamLn.(deadliner).SetDeadline(time.Time{})
	if s.acceptPausing.Swap(false) {
		select {
		case <-s.acceptDone:
		default:
			s.acceptResume <- keep
		}
	}
}

type deadliner interface{ SetDeadline(time.Time) error }

// requestsOnConn keys, in a request's context, the number of requests read
// on its connection so far.
type requestsOnConn struct{}

// abort closes a request's connection without an answer.
func abort(w http.ResponseWriter) {
	if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
		c.Close()
	}
}

// misbehave applies, to a generation that has just taken the set over, the
// defects that change what it took.
func (s *service) misbehave() error {
	var err error
	switch {
	case s.cfg.has(DefectStreamRebind):
		s.streamLn.Close()
		s.streamLn, err = net.Listen("tcp", "127.0.0.1:0")
	case s.cfg.has(DefectUDPNotTaken):
		s.udp.Close()
		s.udp, err = net.ListenPacket("udp", "127.0.0.1:0")
	case s.cfg.has(DefectLinesSkip) && len(s.lines.next) > 0:
		s.lines.next[0]++
	}
	return err
}

func (s *service) stopUDP() {
	s.udpStop.Store(true)
	s.udp.SetReadDeadline(time.Unix(1, 0))
	<-s.udpDone
	s.udp.Close()
}

// offer serves the hand-off socket for the next generation, in restart-sim's
// private (0700) directory. The predecessor closes its own once the hand-off
// succeeded; until then graceful.Listen refuses to replace its live socket
// (ErrAddrInUse), and is tried again for at most Timeout.
func (s *service) offer() error {
	deadline := time.Now().Add(s.cfg.Timeout)
	ln, err := graceful.Listen(s.cfg.Handoff)
	for errors.Is(err, graceful.ErrAddrInUse) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		ln, err = graceful.Listen(s.cfg.Handoff)
	}
	if err != nil {
		return err
	}
	s.handoff = &graceful.Server{
		Handler:      graceful.HandlerFunc(s.handle),
		Timeout:      s.cfg.Timeout,
		ReadyTimeout: s.cfg.ReadyTimeout,
		Done:         s.done,
	}
	s.handoffDone = make(chan struct{})
	go func() {
		defer close(s.handoffDone)
		s.handoff.Serve(ln)
	}()
	return nil
}

// handle writes the whole set for a successor: both listeners, every
// stream with its state, the UDP socket and the shared file. It pauses the
// line writers and the streams first; done resumes or stops them.
func (s *service) handle(conn net.Conn, w graceful.ResponseWriter) {
	s.pauseAccept()
	s.lines.mu.Lock() // released by done
	sess := &session{end: make(chan struct{})}
	s.mu.Lock()
	live := s.streams[:0]
	for _, st := range s.streams {
		if st.pause(s.cfg.Timeout) {
			live = append(live, st)
		}
	}
	s.streams = live
	sess.streams = append(sess.streams, live...)
	s.session = sess
	s.mu.Unlock()

	hs := []graceful.Handler{
		graceful.ListenerHandler(s.httpLn, graceful.Meta{metaRole: roleHTTP}),
		graceful.ListenerHandler(s.streamLn, graceful.Meta{metaRole: roleStreamListener}),
	}
	for _, st := range sess.streams {
		hs = append(hs, graceful.ConnHandler(st.conn, st.meta()))
	}
	hs = append(hs,
		graceful.PacketConnHandler(s.udp, graceful.Meta{metaRole: roleUDP}),
		graceful.FileHandler(s.lines.file, graceful.Meta{
			metaRole: roleLines, metaPath: s.lines.file.Name(), metaNext: s.lines.formatNext(),
		}))
	if s.cfg.has(DefectLeak) {
		if f, err := os.Open(os.DevNull); err == nil {
			s.extras = append(s.extras, f)
		}
		for _, f := range s.extras {
			hs = append(hs, graceful.FileHandler(f, graceful.Meta{metaRole: roleExtra}))
		}
	}
	graceful.SequenceHandler(hs...).Handle(conn, w)
}

// done ends a hand-off: on success the paused streams and writers stop for
// good and the generation drains; on failure they carry on, and this
// generation keeps serving (the rollback). A session that was refused
// before handle ran (another one in progress, a peer not authorised)
// paused nothing and changes nothing.
func (s *service) done(err error) {
	s.mu.Lock()
	sess := s.session
	if sess == nil || errors.Is(err, graceful.ErrBusy) {
		s.mu.Unlock()
		return
	}
	s.session = nil
	s.mu.Unlock()

	ok := err == nil
	if ok {
		s.retiring.Store(true)
		s.lines.stopped = true
		s.lines.misbehave(s.cfg)
	}
	s.lines.mu.Unlock()
	s.resumeAccept(!ok)
	for _, st := range sess.streams {
		st.proceed(!ok)
	}
	msg := control.Message{OK: ok}
	if !ok {
		msg.Err = err.Error()
	}
	if serr := s.send(control.Handoff, msg); serr != nil {
		fmt.Fprintf(os.Stderr, "restart-sim: demo service (pid %d): %v\n", s.id, serr)
	}
	if ok {
		// The successor places its own hand-off socket at the same path
		// once this one is gone.
		go s.handoff.Close()
	}
	close(sess.end)
}

// awaitSession waits for the end of the hand-off in progress, if any.
func (s *service) awaitSession() {
	s.mu.Lock()
	sess := s.session
	s.mu.Unlock()
	if sess != nil {
		<-sess.end
	}
}

// drain stops this generation: line writers, streams (already handed over,
// or ended by their clients at the end of a run), the stream listener, UDP,
// then HTTP through the library's drainer, and the hand-off socket. It
// reports the descriptors left open and what was served.
func (s *service) drain() error {
	s.lines.stop()
	s.lines.file.Close()
	s.mu.Lock()
	streams := s.streams
	s.streams = nil
	s.mu.Unlock()
	for _, st := range streams {
		st.conn.Close()
		<-st.done
	}
	s.streamLn.Close()
	<-s.acceptDone
	s.stopUDP()

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	drainErr := s.drainer.Drain(ctx)
	<-s.httpDone
	s.handoff.Close()
	<-s.handoffDone

	fds, err := harness.CountFDs(os.Getpid())
	if err != nil {
		return err
	}
	served := map[string]int64{}
	for name, n := range s.served {
		if v := n.Load(); v > 0 {
			served[name] = v
		}
	}
	msg := control.Message{Fds: fds, Served: served, LinesNext: s.lines.snapshot()}
	if drainErr != nil {
		msg.Err = "drain: " + drainErr.Error()
	}
	return s.send(control.Exit, msg)
}

// closeAll closes whatever this generation holds, on a failure.
func (s *service) closeAll() {
	for _, c := range []io.Closer{s.httpLn, s.streamLn, s.udp} {
		if c != nil {
			c.Close()
		}
	}
	if s.lines != nil {
		s.lines.file.Close()
	}
	for _, st := range s.streams {
		st.conn.Close()
	}
}

// wait blocks until a signal comes or d passes.
func wait(stop <-chan os.Signal, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
	case <-t.C:
	}
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}
