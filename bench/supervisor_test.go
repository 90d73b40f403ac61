package bench_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gracefulfd/graceful/graceful"
	"github.com/gracefulfd/graceful/supervisor"
)

// The supervisor's two figures (issue 13), each against what it adds to:
//
//   - op=restart: a restart through graceful-supervisor's engine
//     (Supervisor.Restart: start the next generation, which takes the
//     listener from the serving one with graceful and says READY=1, until
//     the supervisor has heard it) against a direct hand-off (this process
//     offers the listener with a graceful.Server and starts the same
//     program, until the server's Done(nil)). Target: within 1.05x.
//   - op=crash: crash recovery (SIGKILL to the serving generation, until
//     its successor, which gets the stored listener from the supervisor
//     over the graceful protocol at the hand-off socket, has said
//     READY=1) against the same direct hand-off, which is a process start
//     plus a hand-off. Target: within 1.1x. BenchmarkSupervisorPaired
//     also reports the part after the supervisor learned of the death
//     (recovery-ns/op, recovery/direct): the kernel reports a killed
//     process only once it has torn it down, about a millisecond here,
//     which no supervisor can hasten.
//   - op=crash/impl=supervisor-spare: the same crash recovery with a
//     spare (Config.Spare): the successor was started in advance and
//     waits in graceful.Receive, so the recovery starts no process.
//     Against the same target.
//
// Every generation is bench/internal/supgen, built once. The retiring
// generation's exit after a restart is waited for outside the timer. The
// supervisor's crash-loop backoff is set to a nanosecond (every
// iteration's crash would otherwise count as part of a loop).
//
//	go test -run '^$' -bench 'Supervisor' -benchtime 40x -count 5 .

func BenchmarkSupervisor(b *testing.B) {
	gen := buildSupgen(b)
	b.Run("op=handoff/impl=direct", func(b *testing.B) {
		d := newDirect(b, gen)
		for range b.N {
			if _, err := d.handoff(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=restart/impl=supervisor", func(b *testing.B) {
		s := newSupervised(b, gen, false)
		b.ResetTimer()
		for range b.N {
			if _, err := s.restart(b); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, spare := range []bool{false, true} {
		name := "op=crash/impl=supervisor"
		if spare {
			name += "-spare"
		}
		b.Run(name, func(b *testing.B) {
			s := newSupervised(b, gen, spare)
			b.ResetTimer()
			for range b.N {
				if _, err := s.crash(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSupervisorPaired runs the four operations in turn within each
// iteration (rotating which goes first), so that load on a shared machine
// hits all alike, and reports each one's mean and the two ratios.
func BenchmarkSupervisorPaired(b *testing.B) {
	gen := buildSupgen(b)
	d := newDirect(b, gen)
	s := newSupervised(b, gen, false)
	withSpare := newSupervised(b, gen, true)
	var afterDeath time.Duration
	ops := []func() (time.Duration, error){
		d.handoff,
		func() (time.Duration, error) { return s.restart(b) },
		func() (time.Duration, error) {
			took, after, err := s.crashTimed()
			afterDeath += after
			return took, err
		},
		withSpare.crash,
	}
	var total [4]time.Duration
	b.ResetTimer()
	for i := range b.N {
		for k := range ops {
			w := (i + k) % len(ops)
			took, err := ops[w]()
			if err != nil {
				b.Fatal(err)
			}
			total[w] += took
		}
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(total[0].Nanoseconds())/n, "direct-ns/op")
	b.ReportMetric(float64(total[1].Nanoseconds())/n, "restart-ns/op")
	b.ReportMetric(float64(total[2].Nanoseconds())/n, "crash-ns/op")
	b.ReportMetric(float64(total[1])/float64(total[0]), "restart/direct")
	b.ReportMetric(float64(total[2])/float64(total[0]), "crash/direct")
	b.ReportMetric(float64(afterDeath.Nanoseconds())/n, "recovery-ns/op")
	b.ReportMetric(float64(afterDeath)/float64(total[0]), "recovery/direct")
	b.ReportMetric(float64(total[3].Nanoseconds())/n, "spare-ns/op")
	b.ReportMetric(float64(total[3])/float64(total[0]), "spare/direct")
}

// buildSupgen builds the generation program.
func buildSupgen(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "supgen")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/gracefulfd/graceful/bench/internal/supgen").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// shortTemp is a fresh directory with a short path, for unix sockets.
func shortTemp(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "gfs")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// direct is the baseline: this process offers a listener with a
// graceful.Server and starts the program, which takes it.
type direct struct {
	gen, path string
	done      chan error
}

func newDirect(b *testing.B, gen string) *direct {
	b.Helper()
	d := &direct{gen: gen, path: filepath.Join(shortTemp(b), "h.sock"), done: make(chan error, 1)}
	ln := listenTCP(b)
	srv := &graceful.Server{
		Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": "tcp"}),
		Done:    func(err error) { d.done <- err },
	}
	hln, err := graceful.Listen(d.path)
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(hln) }()
	b.Cleanup(func() {
		srv.Close()
		<-served
	})
	return d
}

// handoff starts the program and returns when the server heard its READY;
// the program's exit is waited for outside the time returned.
func (d *direct) handoff() (time.Duration, error) {
	start := time.Now()
	cmd := exec.Command(d.gen)
	cmd.Env = []string{"GF_BENCH_HANDOFF=" + d.path}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var err error
	select {
	case err = <-d.done:
	case <-time.After(10 * time.Second):
		err = errors.New("no hand-off within 10s")
	}
	took := time.Since(start)
	if err != nil {
		cmd.Process.Kill()
	}
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	return took, err
}

// supervised is a supervisor of the program, running in this process.
type supervised struct {
	s      *supervisor.Supervisor
	events *events
	path   string // the hand-off socket
	spare  bool   // Config.Spare
}

func newSupervised(b *testing.B, gen string, spare bool) *supervised {
	b.Helper()
	dir := shortTemp(b)
	path := filepath.Join(dir, "h.sock")
	ev := &events{ready: make(chan int64, 1), exited: make(chan int64, 1)}
	s, err := supervisor.New(supervisor.Config{
		Path:       gen,
		Env:        []string{"GF_BENCH_HANDOFF=" + path},
		Dir:        filepath.Join(dir, "run"),
		Handoff:    path,
		Stderr:     os.Stderr,
		Events:     ev.note,
		MinBackoff: time.Nanosecond,
		MaxBackoff: time.Nanosecond,
		Spare:      spare,
	})
	if err != nil {
		b.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background())
		ran <- err
	}()
	b.Cleanup(func() {
		s.Stop(syscall.SIGTERM)
		if err := <-ran; err != nil {
			b.Error(err)
		}
	})
	if err := ev.waitReady(1); err != nil {
		b.Fatal(err)
	}
	sv := &supervised{s: s, events: ev, path: path, spare: spare}
	if err := sv.waitServed(); err != nil {
		b.Fatal(err)
	}
	return sv
}

// waitServed waits, outside the times measured, until the serving
// generation serves the hand-off socket. A generation says READY=1 before
// it can bind the socket its predecessor still serves (the supervisor
// retires the predecessor only once it is ready), so the next operation
// must not begin in that gap: its generation would find no server, listen
// anew, and store a second listener.
func (s *supervised) waitServed() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", s.path)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hand-off socket not served within 10s: %w", err)
		}
		time.Sleep(time.Millisecond) // polling a path: nothing to wait on
	}
}

// restart restarts and returns how long Restart took; the old
// generation's exit is waited for outside that time.
func (s *supervised) restart(b *testing.B) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := s.s.Restart(ctx)
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if err := s.events.waitReady(int64(g.N)); err != nil {
		return took, err
	}
	if err := s.events.waitExited(int64(g.N - 1)); err != nil {
		return took, err
	}
	return took, s.waitServed()
}

// crash kills the serving generation and returns how long its successor
// took to say READY=1.
func (s *supervised) crash() (time.Duration, error) {
	took, _, err := s.crashTimed()
	return took, err
}

// crashTimed is crash, and also returns how much of that time came after
// the supervisor learned of the death (the kernel reports a killed
// process once it has torn it down, which no supervisor can hasten).
func (s *supervised) crashTimed() (took, afterDeath time.Duration, err error) {
	st, ok := s.s.Status()
	if !ok || st.Serving == nil {
		return 0, 0, errors.New("no generation serves")
	}
	if s.spare {
		if st, err = s.waitSpare(); err != nil {
			return 0, 0, err
		}
	}
	start := time.Now()
	if err := syscall.Kill(st.Serving.PID, syscall.SIGKILL); err != nil {
		return 0, 0, err
	}
	next := st.Serving.N + 1
	if s.spare {
		next = st.Spare.N
	}
	err = s.events.waitReady(int64(next))
	end := time.Now()
	took = end.Sub(start)
	if err != nil {
		return took, 0, err
	}
	died := time.Unix(0, s.events.died.Load())
	if died.Before(start) {
		return took, 0, errors.New("no death reported for the generation killed")
	}
	return took, end.Sub(died), s.waitServed()
}

// waitSpare waits, outside the times measured, until the spare waits for
// its turn, and returns the status then.
func (s *supervised) waitSpare() (supervisor.Status, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, ok := s.s.Status()
		if ok && st.Serving != nil && st.Spare != nil && st.SpareWaiting {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, errors.New("no spare waits within 10s")
		}
		time.Sleep(time.Millisecond) // the spare's start: nothing here to wait on
	}
}

// events passes on which generation became ready and which retiring one
// exited, from the supervisor's events.
type events struct {
	ready, exited chan int64
	died          atomic.Int64 // when the supervisor last learned a serving generation died, in ns since the Unix epoch
}

func (e *events) note(ev supervisor.Event) {
	if ev.Kind == supervisor.EventDied {
		e.died.Store(time.Now().UnixNano())
	}
	switch {
	case ev.Kind == supervisor.EventReady:
		e.ready <- int64(ev.Gen.N)
	case ev.Kind == supervisor.EventExited && ev.Gen.State == "retiring":
		e.exited <- int64(ev.Gen.N)
	}
}

func (e *events) waitReady(n int64) error  { return waitFor(e.ready, n, "ready") }
func (e *events) waitExited(n int64) error { return waitFor(e.exited, n, "exited") }

func waitFor(ch chan int64, n int64, what string) error {
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-ch:
			if got == n {
				return nil
			}
		case <-deadline:
			return errors.New("generation " + what + ": not within 10s")
		}
	}
}
