package conformance

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"

	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// nobody is the uid of the unauthorised peer: the usual overflow uid.
const nobody = 65534

// stranger is a uid that is neither the suite's nor the overflow uid, for
// a peer that a policy lets in.
const stranger = 12345

// dialAs connects to path (a file path or "@name") with effective uid uid,
// so that the kernel records that uid as the peer's credentials
// (SO_PEERCRED). It needs root.
func dialAs(uid int, path string) (*net.UnixConn, error) {
	var c *net.UnixConn
	err := asUID(uid, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		// connect(2) waits for room in a full backlog: bound it.
		tv := unix.NsecToTimeval(int64(10 * time.Second))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			unix.Close(fd)
			return os.NewSyscallError("connect", err)
		}
		f := os.NewFile(uintptr(fd), "peer")
		defer f.Close()
		fc, err := net.FileConn(f)
		if err != nil {
			return err
		}
		c = fc.(*net.UnixConn)
		return nil
	})
	return c, err
}

func dialerAs(uid int) func(string) (*net.UnixConn, error) {
	return func(path string) (*net.UnixConn, error) { return dialAs(uid, path) }
}

// reachable makes the socket of a sender scenario reachable by other
// users, so that the check under test is the implementation's, not the
// file system's.
func reachable(s *receiverScript) error {
	if err := os.Chmod(filepath.Dir(s.run.path), 0o711); err != nil {
		return err
	}
	return os.Chmod(s.run.path, 0o666)
}

// uids is the authorize field of a request (feature authorize).
func uids(ids ...int) map[string]any {
	return map[string]any{"authorize": map[string]any{"uids": append([]int{}, ids...)}}
}

// refusedAs is a sender scenario in which a peer of uid (0: the suite's
// own) sends what send writes and the implementation must refuse it.
func refusedAs(uid int, abstract, patient bool, request map[string]any, needs []string, send func(p *wirePeer) error, e *env) senderScenario {
	sc := senderScenario{fixtures: one, root: uid != 0, abstract: abstract, request: request, needs: needs,
		script: func(s *receiverScript) {
			if !abstract {
				if err := reachable(s); err != nil {
					s.run.suiteErr = err
					return
				}
			}
			s.refusedSession(send)
			s.result()
		}}
	if uid != 0 {
		sc.dialer = dialerAs(uid)
	}
	if patient {
		sc.timeout = e.patient()
	}
	return sc
}

// refusedAuth checks AUTH-1's refusal: one ERROR UNAUTHORIZED, nothing
// before it, the close, no descriptor, a failure reported.
func (e *env) refusedAuth(ids string, run func() *senderRun) {
	e.verify("is refused with one ERROR UNAUTHORIZED, nothing before it, then the close, and gets no descriptor", ids, func() {
		r := run()
		r.mustServe()
		l := r.session(0)
		Expect(l.received).To(BeZero(), "descriptors sent to a refused peer"+r.transcript())
		r.expectRefusal(l, wire.CodeUnauthorized)
		Expect(r.result(0).reply.OK).To(BeFalse(), "the hand-off was reported as done"+r.transcript())
	})
}

// acceptedAs is a sender scenario in which a peer of uid takes the set.
func acceptedAs(uid int, request map[string]any, needs []string) senderScenario {
	return senderScenario{fixtures: one, root: uid != 0, request: request, needs: needs, dialer: dialerAs(uid),
		script: func(s *receiverScript) {
			if err := reachable(s); err != nil {
				s.run.suiteErr = err
				return
			}
			s.goodSession()
			s.result()
		}}
}

// refusingReceiver is a receiver scenario whose sender (the suite,
// listening as uid when not 0) writes WELCOME, the set and END at once,
// without waiting for HELLO: a receiver that does not check before
// writing HELLO takes it.
func refusingReceiver(uid int, abstract bool, request map[string]any, needs []string) receiverScenario {
	return receiverScenario{fixtures: one, listenAs: uid, abstract: abstract, request: request, needs: needs,
		noHello: true, script: func(s *senderScript) error {
			return s.p.send(frames(welcome(), batchOf(s.set), endOf(len(s.set))), s.set.fds()...)
		}}
}

// refusesSender checks AUTH-5's refusal on the receiver's side.
func (e *env) refusesSender(ids string, run func() *receiverRun) {
	e.verify("writes no HELLO, answers ERROR UNAUTHORIZED, takes nothing and reports UNAUTHORIZED", ids, func() {
		r := run()
		r.mustRun()
		Expect(r.framesOf(wire.TypeHello)).To(BeEmpty(), "HELLO written to a sender it must refuse"+r.transcript())
		Expect(r.framesOf(wire.TypeAck)).To(BeEmpty(), "the set was acknowledged"+r.transcript())
		Expect(r.errorCodes()).To(Equal([]wire.Code{wire.CodeUnauthorized}), "one ERROR UNAUTHORIZED"+r.transcript())
		Expect(r.reply.Descriptors).To(BeEmpty(), "descriptors handed to the user"+r.transcript())
		r.expectReported("UNAUTHORIZED")
		r.expectNoLeak()
	})
}

func authSpecs(e *env) {
	e.describe("the implementation as sender", iut("sender"), func() {
		e.describe("a receiver running as another user", func() {
			run := e.lazySender(refusedAs(nobody, false, false, nil, nil, func(p *wirePeer) error { return p.send(hello1()) }, e))
			e.refusedAuth("AUTH-1", run)
		})

		e.describe("a receiver running as another user that says nothing", func() {
			run := e.lazySender(refusedAs(nobody, false, true, nil, nil, func(p *wirePeer) error { return nil }, e))
			e.verify("is refused at once, without waiting for a HELLO", "AUTH-6", func() {
				r := run()
				r.mustServe()
				r.expectRefusal(r.session(0), wire.CodeUnauthorized)
				Expect(r.session(0).received).To(BeZero(), r.transcript())
			})
		})

		e.describe("a receiver running as another user whose first frame announces 2 MiB", func() {
			run := e.lazySender(refusedAs(nobody, false, true, nil, nil, func(p *wirePeer) error {
				return p.send(headerOnly(wire.Header{Type: wire.TypeHello, Length: 2 << 20}))
			}, e))
			e.verify("is refused as UNAUTHORIZED before the frame is judged", "AUTH-6 NEG-6", func() {
				r := run()
				r.mustServe()
				r.expectRefusal(r.session(0), wire.CodeUnauthorized)
			})
		})

		e.describe("a receiver running as another user with a HELLO of the wrong magic", func() {
			run := e.lazySender(refusedAs(nobody, false, true, nil, nil, func(p *wirePeer) error {
				h := hello1()
				copy(h[8:], "GRACELESS")
				return p.send(h)
			}, e))
			e.verify("is refused as UNAUTHORIZED, not MALFORMED", "NEG-6", func() {
				r := run()
				r.mustServe()
				r.expectRefusal(r.session(0), wire.CodeUnauthorized)
			})
		})

		e.describe("a receiver of another user that it dials", func() {
			run := e.lazySender(senderScenario{fixtures: one, dial: true, listenAs: nobody, needs: []string{"dial"}, timeout: e.patient(),
				script: func(s *receiverScript) {
					s.refusedSession(func(p *wirePeer) error { return nil })
					s.result()
				}})
			e.verify("is refused at once with ERROR UNAUTHORIZED, without waiting for a HELLO", "AUTH-6", func() {
				r := run()
				r.mustServe()
				r.expectRefusal(r.session(0), wire.CodeUnauthorized)
				Expect(r.session(0).received).To(BeZero(), r.transcript())
				Expect(r.result(0).reply.OK).To(BeFalse(), r.transcript())
			})
		})

		e.describe("a receiver of the same user, under a policy that admits nobody", func() {
			run := e.lazySender(refusedAs(0, false, true, uids(), []string{"authorize"}, func(p *wirePeer) error { return nil }, e))
			e.verify("is refused at once with ERROR UNAUTHORIZED, without waiting for a HELLO", "AUTH-6", func() {
				r := run()
				r.mustServe()
				r.expectRefusal(r.session(0), wire.CodeUnauthorized)
				Expect(r.result(0).reply.OK).To(BeFalse(), r.transcript())
			})
		})

		e.describe("a receiver of another user that the policy admits", func() {
			run := e.lazySender(acceptedAs(stranger, uids(stranger), []string{"authorize"}))
			e.verify("gets the set", "AUTH-2", func() {
				r := run()
				r.mustServe()
				r.expectSameDescriptors(r.session(0))
				Expect(r.result(0).reply.Outcome).To(Equal("ready"), r.transcript())
			})
		})

		e.describe("a receiver as the overflow uid, under a policy that names it", func() {
			run := e.lazySender(refusedAs(nobody, false, false, uids(nobody), []string{"authorize"}, func(p *wirePeer) error { return p.send(hello1()) }, e))
			e.refusedAuth("AUTH-7", run)
		})

		e.describe("a receiver running as another user, on an abstract address", func() {
			run := e.lazySender(refusedAs(nobody, true, false, nil, []string{"abstract"}, func(p *wirePeer) error { return p.send(hello1()) }, e))
			e.refusedAuth("AUTH-8", run)
		})
		e.describe("a receiver of the same user, on an abstract address", func() {
			run := e.lazySender(senderScenario{fixtures: one, abstract: true, needs: []string{"abstract"}, script: goodOne})
			e.verify("gets the set", "AUTH-8", func() {
				r := run()
				r.mustServe()
				r.expectSameDescriptors(r.session(0))
			})
		})

		e.describe("the socket it creates", func() {
			run := e.lazySender(senderScenario{fixtures: one})
			e.verify("has mode 0600", "AUTH-3", func() {
				r := run()
				r.mustServe()
				Expect(r.socketErr).NotTo(HaveOccurred(), r.transcript())
				Expect(r.socketMode.Perm()).To(Equal(os.FileMode(0o600)), r.transcript())
			})
		})

		e.describe("the socket it creates, watched with inotify while it binds", func() {
			run := e.lazySender(senderScenario{fixtures: one, dirMode: 0o755, before: watchDir})
			e.verify("is never reachable by other users with wider permissions", "AUTH-3", func() {
				r := run()
				r.mustServe()
				w := r.watch.(*dirWatch)
				Expect(w.err).NotTo(HaveOccurred(), "watching the directory"+r.transcript())
				Expect(w.events).NotTo(BeEmpty(), "no event in the directory: the socket was not created there"+r.transcript())
				Expect(w.windows()).To(BeEmpty(), "events:\n%s%s", w.String(), r.transcript())
			})
		})

		for _, o := range pathOccupants {
			e.occupy(o)
		}

		e.describe("a second receiver while a session is in progress", func() {
			run := e.lazySender(senderScenario{fixtures: one, timeout: e.patient(), script: func(s *receiverScript) {
				p, first := s.open()
				if p == nil {
					return
				}
				defer p.close()
				s.refusedSession(func(q *wirePeer) error { return q.send(hello1()) })
				s.result()
				s.finishSession(p, first, wire.AppendCount(nil, wire.TypeAck, uint32(len(first.records))), true)
				s.result()
			}})
			e.verify("is answered ERROR BUSY at once, and the first session goes on", "AUTH-4", func() {
				r := run()
				r.mustServe()
				r.expectRecords(r.session(0))
				r.expectRefusal(r.session(1), wire.CodeBusy)
				Expect(r.session(1).received).To(BeZero(), r.transcript())
				Expect(r.result(0).reply.OK).To(BeFalse(), "the refused session counted as done"+r.transcript())
				Expect(r.result(1).reply.Outcome).To(Equal("ready"), r.transcript())
			})
		})

		e.describe("a second receiver between the first one's ACK and READY", func() {
			run := e.lazySender(senderScenario{fixtures: one, timeout: e.patient(), script: func(s *receiverScript) {
				p, first := s.open()
				if p == nil {
					return
				}
				defer p.close()
				p.send(wire.AppendCount(nil, wire.TypeAck, uint32(len(first.records))))
				if err := p.drained(); err != nil {
					s.note("ACK: %v", err)
				}
				s.refusedSession(func(q *wirePeer) error { return q.send(hello1()) })
				s.result()
				s.finishSession(p, first, nil, true)
				s.result()
			}})
			e.verify("is answered ERROR BUSY: the session lasts until READY", "AUTH-4", func() {
				r := run()
				r.mustServe()
				r.expectRefusal(r.session(1), wire.CodeBusy)
				Expect(r.result(1).reply.Outcome).To(Equal("ready"), r.transcript())
			})
		})
	})

	e.describe("the implementation as receiver", iut("receiver"), func() {
		e.describe("a sender running as another user", func() {
			run := e.lazyReceiver(refusingReceiver(nobody, false, nil, nil))
			e.refusesSender("AUTH-5", run)
		})
		e.describe("a sender of the same user, under a policy that admits nobody", func() {
			run := e.lazyReceiver(refusingReceiver(0, false, uids(), []string{"authorize"}))
			e.refusesSender("AUTH-5", run)
		})
		e.describe("a sender as the overflow uid, under a policy that names it", func() {
			run := e.lazyReceiver(refusingReceiver(nobody, false, uids(nobody), []string{"authorize"}))
			e.refusesSender("AUTH-7", run)
		})
		e.describe("a sender running as another user, on an abstract address", func() {
			run := e.lazyReceiver(refusingReceiver(nobody, true, nil, []string{"abstract"}))
			e.refusesSender("AUTH-8", run)
		})
		e.delivers("a set from a sender of the same user, on an abstract address", "AUTH-8", receiverScenario{
			fixtures: one, abstract: true, needs: []string{"abstract"}, script: (*senderScript).wholeSession})

		e.describe("a sender that refuses it at once and closes, its HELLO unread", func() {
			run := e.lazyReceiver(receiverScenario{fixtures: one, noHello: true, script: func(s *senderScript) error {
				// As a sender does (AUTH-6): the refusal is written at
				// once, and the connection closed with whatever the
				// implementation wrote unread. The implementation is
				// stopped meanwhile, so that it finds both at once: the
				// ERROR queued and the connection hung up (its HELLO
				// write, if it had not made it yet, fails with EPIPE).
				resume, err := stop(s.run.a.holder, s.e.cfg.wait())
				if err != nil {
					return err
				}
				defer resume()
				if err := s.p.send(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeUnauthorized, Message: "not you"})); err != nil {
					return err
				}
				return s.p.c.Close()
			}})
			e.verify("still reads the ERROR and reports UNAUTHORIZED, not a closed connection", "AUTH-9", func() {
				r := run()
				r.mustRun()
				r.expectReported("UNAUTHORIZED")
				Expect(r.reply.Descriptors).To(BeEmpty(), r.transcript())
			})
		})

		e.describe("a sender that answers BUSY once", func() {
			run := e.lazyReceiver(receiverScenario{fixtures: one, ready: true, script: func(s *senderScript) error {
				if err := s.p.send(wire.AppendError(nil, wire.ErrorFrame{Code: wire.CodeBusy, Message: "busy"})); err != nil {
					return err
				}
				if err := s.acceptAgain(); err != nil {
					return err
				}
				return s.wholeSession()
			}})
			e.verify("tries again on a new connection and gets the set", "AUTH-10", func() {
				r := run()
				r.mustRun()
				Expect(r.connections).To(Equal(2), "connections"+r.transcript())
				Expect(r.reply.OK).To(BeTrue(), "the set was not received"+r.transcript())
				r.expectAck(true)
				r.expectNoLeak()
			})
		})
	})
}

// pathOccupant is something the suite puts at the socket path before
// serve (AUTH-11): whether the implementation must serve, and how the
// suite checks, once serve is answered, that the occupant is unharmed.
type pathOccupant struct {
	name   string
	serves bool
	put    func(r *senderRun) (inspect func() error, err error)
}

var fileContent = []byte("precious data that must survive\n")

var pathOccupants = []pathOccupant{
	{name: "a regular file", put: func(r *senderRun) (func() error, error) {
		if err := os.WriteFile(r.path, fileContent, 0o600); err != nil {
			return nil, err
		}
		return func() error {
			got, err := os.ReadFile(r.path)
			if err != nil || !bytes.Equal(got, fileContent) {
				return fmt.Errorf("the file at the path is gone or changed (%q, %v)", clip(got), err)
			}
			return nil
		}, nil
	}},
	{name: "a FIFO", put: func(r *senderRun) (func() error, error) {
		if err := unix.Mkfifo(r.path, 0o600); err != nil {
			return nil, os.NewSyscallError("mkfifo", err)
		}
		return func() error {
			if st, err := os.Lstat(r.path); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
				return fmt.Errorf("the FIFO at the path is gone or replaced (%v)", err)
			}
			return nil
		}, nil
	}},
	{name: "a live socket", put: func(r *senderRun) (func() error, error) {
		ln, err := listenUnix(r.path)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(r.path)
		if err != nil {
			ln.Close()
			return nil, err
		}
		ino := st.Sys().(*syscall.Stat_t).Ino
		return func() error {
			defer ln.Close()
			if st, err := os.Stat(r.path); err != nil || st.Sys().(*syscall.Stat_t).Ino != ino {
				return fmt.Errorf("the live socket at the path is gone or replaced (%v)", err)
			}
			return nil
		}, nil
	}},
	{name: "a stale socket", serves: true, put: func(r *senderRun) (func() error, error) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, os.NewSyscallError("socket", err)
		}
		defer unix.Close(fd)
		return func() error { return nil }, os.NewSyscallError("bind", unix.Bind(fd, &unix.SockaddrUnix{Name: r.path}))
	}},
}

// occupy registers an AUTH-11 scenario.
func (e *env) occupy(o pathOccupant) {
	e.describe("a socket path where "+o.name+" already is", func() {
		run := e.lazySender(senderScenario{fixtures: one,
			before: func(r *senderRun) error {
				inspect, err := o.put(r)
				if err != nil {
					return err
				}
				r.afterServe = append(r.afterServe, func() { r.checks["occupant"] = inspect() })
				return nil
			},
			script: goodOne})
		if o.serves {
			e.verify("replaces it and serves", "AUTH-11", func() {
				r := run()
				r.mustServe()
				r.expectRecords(r.session(0))
			})
			return
		}
		e.verify("refuses to serve and leaves it as it was", "AUTH-11", func() {
			r := run()
			r.mustRun()
			Expect(r.serveReply.OK).To(BeFalse(), "served over "+o.name+r.transcript())
			Expect(r.checks["occupant"]).NotTo(HaveOccurred(), r.transcript())
		})
	})
}

// dirWatch records what happens in the socket's directory while the
// implementation binds (AUTH-3), with inotify.
type dirWatch struct {
	fd     int
	dir    string
	dirs   map[int]string // watch descriptor: directory
	events []dirEvent
	err    error
	// stopping tells the reader to finish once it has seen the last
	// event; done says it has (events are then the scenario's).
	stopping chan struct{}
	done     chan struct{}
}

type dirEvent struct {
	path string
	mask uint32
	mode os.FileMode // right after the event; 0 when gone
}

func (ev dirEvent) String() string {
	return fmt.Sprintf("%s %#x mode %v", ev.path, ev.mask, ev.mode)
}

// watchDir starts watching the socket's directory, and every directory
// created in it, before serve.
func watchDir(r *senderRun) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return os.NewSyscallError("inotify_init1", err)
	}
	w := &dirWatch{fd: fd, dir: filepath.Dir(r.path), dirs: map[int]string{}, done: make(chan struct{}), stopping: make(chan struct{})}
	if err := w.add(w.dir); err != nil {
		unix.Close(fd)
		return err
	}
	r.watch = w
	go w.read()
	// The scenario ends the watch once serve is answered.
	r.afterServe = append(r.afterServe, w.stop)
	return nil
}

func (w *dirWatch) add(dir string) error {
	wd, err := unix.InotifyAddWatch(w.fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ATTRIB)
	if err != nil {
		return os.NewSyscallError("inotify_add_watch", err)
	}
	w.dirs[wd] = dir
	return nil
}

// endMark is the file whose creation ends a watch.
const endMark = ".gf-watch-end"

func (w *dirWatch) read() {
	defer close(w.done)
	defer unix.Close(w.fd)
	buf := make([]byte, 64<<10)
	var deadline time.Time
	for {
		if n := len(w.events); n > 0 && filepath.Base(w.events[n-1].path) == endMark {
			return
		}
		select {
		case <-w.stopping:
			if deadline.IsZero() {
				deadline = time.Now().Add(5 * time.Second)
			}
		default:
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			w.err = errorString("the watch did not see its own end mark")
			return
		}
		pfd := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 20); err != nil && err != unix.EINTR {
			w.err = os.NewSyscallError("poll", err)
			return
		}
		n, err := unix.Read(w.fd, buf)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			w.err = os.NewSyscallError("read", err)
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			dir, ok := w.dirs[int(ev.Wd)]
			if !ok || name == "" {
				continue
			}
			p := filepath.Join(dir, name)
			de := dirEvent{path: p, mask: ev.Mask}
			if st, err := os.Lstat(p); err == nil {
				de.mode = st.Mode()
			}
			w.events = append(w.events, de)
			if ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&unix.IN_CREATE != 0 {
				w.add(p)
			}
		}
	}
}

// stop ends the watch once the implementation serves; events already
// queued are read first.
func (w *dirWatch) stop() {
	mark := filepath.Join(w.dir, endMark)
	if err := os.WriteFile(mark, nil, 0o600); err != nil {
		w.err = err
	}
	close(w.stopping)
	<-w.done
	os.Remove(mark)
}

// windows lists what made a socket reachable with wider permissions than
// 0600 while the implementation created it: a socket whose mode changed
// after it appeared in a directory others can search, one that appeared
// there with group or other bits, or one created in a directory it made
// searchable by others.
func (w *dirWatch) windows() []string {
	open := map[string]bool{w.dir: true} // directories others can search
	var out []string
	for _, ev := range w.events {
		if filepath.Base(ev.path) == endMark {
			continue
		}
		dir := filepath.Dir(ev.path)
		switch {
		case ev.mask&unix.IN_ISDIR != 0:
			if ev.mode.Perm()&0o011 != 0 && open[dir] {
				open[ev.path] = true
			}
		case !open[dir]:
		case ev.mask&unix.IN_ATTRIB != 0 && ev.mode&os.ModeSocket != 0:
			out = append(out, "the mode of "+ev.path+" changed after it appeared where others can reach it")
		case ev.mode&os.ModeSocket != 0 && ev.mode.Perm()&0o177 != 0:
			out = append(out, fmt.Sprintf("%s appeared with mode %v", ev.path, ev.mode.Perm()))
		}
	}
	return out
}

func (w *dirWatch) String() string {
	var b bytes.Buffer
	for _, ev := range w.events {
		fmt.Fprintln(&b, ev)
	}
	return b.String()
}
