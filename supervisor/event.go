//go:build linux

package supervisor

import (
	"sync"
	"time"
)

// EventKind says what an Event reports.
type EventKind string

// The kinds of events, in the order they typically come. Gen is the
// generation concerned, as it is right after the event.
const (
	// EventStarted: generation Gen's process was started (Gen.PID), or
	// Gen, a spare, was told its turn came.
	EventStarted EventKind = "started"
	// EventSpare: Gen's process was started as a spare (Config.Spare). If
	// its turn comes, EventStarted follows; otherwise EventExited.
	EventSpare EventKind = "spare"
	// EventMainPID: Gen said MAINPID=; Gen.MainPID is its new main process.
	EventMainPID EventKind = "main-pid"
	// EventStatus: Gen said STATUS=; Gen.Status is the text.
	EventStatus EventKind = "status"
	// EventStored: Gen stored (FDSTORE=1) or removed (FDSTOREREMOVE=1)
	// descriptors, and the store changed; Stored names what it holds now.
	EventStored EventKind = "stored"
	// EventReady: Gen said READY=1 and serves now (its first READY=1
	// only). After a restart, EventRestarted follows.
	EventReady EventKind = "ready"
	// EventRestartRequested: a restart begins; Gen is the generation it
	// replaces. Requests queued behind a restart share the one that
	// begins after it, and one event.
	EventRestartRequested EventKind = "restart-requested"
	// EventRestarted: Gen, started by a restart, took over. EventRetiring
	// follows for the generation it replaced, if that one still ran.
	EventRestarted EventKind = "restarted"
	// EventRestartFailed: Gen, started by a restart, did not take over and
	// was killed (Gen.PID is 0 when it could not be started at all). Err is
	// what Restart returns: it matches ErrRestartFailed, or ErrStopping
	// when Stop ended the restart. EventRolledBack follows when the
	// generation that served before serves on; EventBackoff when none
	// does (it died meanwhile).
	EventRestartFailed EventKind = "restart-failed"
	// EventRolledBack: a restart failed and Gen, which served before it,
	// serves on. Err is the restart's error.
	EventRolledBack EventKind = "rolled-back"
	// EventStartFailed: Gen, started without a restart (the first one, or
	// one replacing a generation that died), did not become ready and was
	// killed (Gen.PID is 0 when it could not be started at all). Err says
	// why. EventBackoff follows, unless the supervisor is stopping.
	EventStartFailed EventKind = "start-failed"
	// EventRetiring: Gen handed over and got Config.StopSignal.
	EventRetiring EventKind = "retiring"
	// EventExited: Gen's main process ended, and Gen was not serving, or
	// the supervisor was stopping: Exit is how, Gen.State what Gen was
	// then ("starting", "serving", "retiring" or "failed": killed after a
	// failed start). Every generation started ends with one EventExited or
	// one EventDied.
	EventExited EventKind = "exited"
	// EventDied: Gen was serving and its main process ended on its own (a
	// crash): Exit is how. EventBackoff and a start follow, unless a
	// restart in progress takes over.
	EventDied EventKind = "died"
	// EventBackoff: the next generation starts after Wait (zero: at once),
	// to replace one that died or failed to start. Gen is zero.
	EventBackoff EventKind = "backoff"
	// EventStopping: Stop was called or Run's context ended; Gen is the
	// generation that was serving, if any (zero otherwise).
	EventStopping EventKind = "stopping"
	// EventOrphan: a process that was no generation's was reaped
	// (Config.ReapOrphans); Gen.N is 0, Gen.PID is its pid, Exit how it
	// ended.
	EventOrphan EventKind = "orphan"
)

// Event is something that happened to the service; see Config.Events.
type Event struct {
	Kind EventKind
	// Time is when the supervisor saw it happen.
	Time time.Time
	// Gen is the generation concerned, as it is after the event (zero
	// when none is).
	Gen Generation
	// Exit is how a process ended (EventExited, EventDied, EventOrphan).
	Exit Exit
	// Err says why a start or restart failed (EventStartFailed,
	// EventRestartFailed, EventRolledBack).
	Err error
	// Wait is the wait before the next start (EventBackoff).
	Wait time.Duration
	// Stored names the descriptors in the store (EventStored).
	Stored []string
}

// events delivers events to Config.Events, in order and one at a time, on
// a goroutine of its own: Run's goroutine only appends to a list, so that
// a slow callback never holds up the supervisor, and a callback may call
// the Supervisor's methods, which need Run's goroutine, without a
// deadlock.
type events struct {
	fn   func(Event)
	mu   sync.Mutex
	list []Event
	shut bool          // no more events: deliver the rest and return
	wake chan struct{} // one pending wake-up is enough
	done chan struct{} // closed when the last event was delivered
}

func newEvents(fn func(Event)) *events {
	return &events{fn: fn, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// emit queues e; it never blocks.
func (q *events) emit(e Event) {
	if q.fn == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	q.mu.Lock()
	q.list = append(q.list, e)
	q.mu.Unlock()
	q.signal()
}

func (q *events) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run delivers events until close.
func (q *events) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		batch, shut := q.list, q.shut
		q.list = nil
		q.mu.Unlock()
		for _, e := range batch {
			q.fn(e)
		}
		if len(batch) == 0 {
			if shut {
				return
			}
			<-q.wake
		}
	}
}

// close waits until every event queued has been delivered.
func (q *events) close() {
	q.mu.Lock()
	q.shut = true
	q.mu.Unlock()
	q.signal()
	<-q.done
}
