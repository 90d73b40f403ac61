//go:build linux

package supervisor

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A spare (Config.Spare) is the next generation started in advance while
// one serves: it waits in graceful.Receive, before its session, until
// the supervisor writes 'G' on the socket of graceful.SpareEnv. When the
// serving generation dies, that is all the recovery has to do besides
// serving the store at the hand-off socket: the program is already
// running. A restart does not use it: a restart starts the program as it
// is now (a new binary, a new configuration), so it dismisses the spare
// by closing its end of the socket, and a new spare is started once the
// new generation serves. So is one after a crash recovery.

// startSpare starts a spare, when Config.Spare asks for one and a
// generation serves without one.
func (st *state) startSpare() {
	s := st.s
	if !s.cfg.Spare || st.noSpare || st.stopping || st.spare != nil || st.serving == nil || st.starting != nil {
		return
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.log.Warn("cannot start a spare", "err", os.NewSyscallError("socketpair", err))
		return
	}
	ours, theirs := pair[0], pair[1]
	defer unix.Close(theirs)
	f := os.NewFile(uintptr(ours), "spare")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.log.Warn("cannot start a spare", "err", err)
		return
	}
	turn := c.(*net.UnixConn)
	g := &gen{Generation: Generation{State: spare}, mainFd: -1, turn: turn}
	if err := st.launchGen(g, nil, nil, theirs); err != nil {
		turn.Close()
		s.log.Warn("cannot start a spare", "err", err)
		return
	}
	st.spare = g
	s.log.Info("spare started", "gen", g.N, "pid", g.PID)
	st.emit(Event{Kind: EventSpare, Time: g.Started, Gen: g.Generation})
	go func() {
		// 'W' once the spare waits in graceful.Receive; nothing (the end)
		// if it exits first.
		var b [1]byte
		if n, _ := turn.Read(b[:]); n == 1 && b[0] == 'W' {
			s.post(func() { g.spareWaiting = true })
		}
	}()
}

// takeSpare makes the spare the starting generation, if there is one
// that can be told its turn came, and reports whether it did. The store
// must be at the hand-off socket already.
func (st *state) takeSpare() bool {
	g := st.spare
	if g == nil {
		return false
	}
	st.spare = nil
	g.turn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := g.turn.Write([]byte{'G'})
	g.turn.Close() // what was written still arrives
	if err != nil {
		st.s.log.Warn("the spare cannot be told its turn came: starting a generation instead", "gen", g.N, "err", err)
		st.dismiss(g)
		return false
	}
	g.State = starting
	g.Started = time.Now()
	st.s.log.Info("spare takes over", "gen", g.N, "pid", g.PID)
	st.emit(Event{Kind: EventStarted, Time: g.Started, Gen: g.Generation})
	st.armReadyTimer(g)
	return true
}

// dropSpare dismisses the spare, if any.
func (st *state) dropSpare() {
	if g := st.spare; g != nil {
		st.spare = nil
		g.turn.Close()
		st.dismiss(g)
	}
}

// dismiss ends a spare that will not serve: its graceful.Receive fails
// with graceful.ErrSpareDismissed, and it gets the stop signal and, after
// StopTimeout, SIGKILL.
func (st *state) dismiss(g *gen) {
	g.State = retiring
	st.s.log.Info("spare dismissed", "gen", g.N, "pid", g.PID)
	st.stopGeneration(g, st.s.cfg.StopSignal)
}

// spareTookOver handles READY=1 from the spare, which nobody told its
// turn had come: the program ignored graceful.SpareEnv, and took the set
// from the serving generation as a restart would. That is what happened,
// so it is treated as a restart that took over; no spare is started again.
func (st *state) spareTookOver(g *gen) bool {
	st.spare = nil
	g.turn.Close()
	st.noSpare = true
	err := fmt.Errorf("generation %d, started as a spare, said READY=1 before its turn came: the program does not wait as %s asks; no more spares", g.N, "graceful.SpareEnv")
	st.s.log.Error("spare took over unasked", "gen", g.N, "err", err)
	if st.starting != nil {
		g.State = failed
		g.proc.killGroup()
		st.killMain(g)
		return false
	}
	g.State = starting
	st.starting = g
	return true
}
