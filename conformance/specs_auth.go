package conformance

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful/wire"
)

// nobody is the uid of the unauthorised peer.
const nobody = 65534

// dialAs connects to path with effective uid uid, so that the kernel
// records that uid as the peer's credentials (SO_PEERCRED). Only the
// calling OS thread changes its uid (a raw setresuid, not Go's all-threads
// one), for the length of connect; if it cannot change back, the thread
// stays locked and dies with the goroutine.
func dialAs(uid int, path string) (*net.UnixConn, error) {
	errs := make(chan error, 1)
	conns := make(chan *net.UnixConn, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errs <- os.NewSyscallError("socket", err)
			return
		}
		// connect(2) waits for room in a full backlog: bound it.
		tv := unix.NsecToTimeval(int64(10 * time.Second))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		keep := ^uintptr(0)
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
			unix.Close(fd)
			runtime.UnlockOSThread()
			errs <- os.NewSyscallError("setresuid", e)
			return
		}
		cerr := unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, 0, keep); e == 0 {
			runtime.UnlockOSThread()
		}
		if cerr != nil {
			unix.Close(fd)
			errs <- os.NewSyscallError("connect", cerr)
			return
		}
		f := os.NewFile(uintptr(fd), "peer")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			errs <- err
			return
		}
		conns <- c.(*net.UnixConn)
	}()
	select {
	case c := <-conns:
		return c, nil
	case err := <-errs:
		return nil, err
	}
}

func authSpecs(e *env) {
	e.describe("the implementation as sender", iut("sender"), func() {
		e.describe("a receiver running as another user", func() {
			run := e.lazySender(senderScenario{fixtures: one, script: func(s *receiverScript) {
				if os.Geteuid() != 0 {
					s.run.checks["root"] = errorString("the suite must run as root to connect as another user")
					return
				}
				// Let the other user reach the socket: the check under test
				// is the sender's, not the file system's.
				if err := os.Chmod(filepath.Dir(s.run.path), 0o711); err != nil {
					s.run.suiteErr = err
					return
				}
				if err := os.Chmod(s.run.path, 0o666); err != nil {
					s.run.suiteErr = err
					return
				}
				s.refusedSession(func(p *wirePeer) error { return p.send(hello1()) })
				s.result()
			}, dialer: func(path string) (*net.UnixConn, error) { return dialAs(nobody, path) }})
			e.verify("is refused with ERROR UNAUTHORIZED and gets no descriptor", "AUTH-1", func() {
				r := run()
				if err := r.checks["root"]; err != nil {
					skipFor("%v", err)
				}
				r.mustServe()
				l := r.session(0)
				Expect(l.received).To(BeZero(), "descriptors sent to uid 65534"+r.transcript())
				Expect(l.errFrame).NotTo(BeNil(), "no ERROR frame"+r.transcript())
				Expect(l.errFrame.Code).To(Equal(wire.CodeUnauthorized), r.transcript())
				Expect(r.result(0).reply.OK).To(BeFalse(), "the hand-off was reported as done"+r.transcript())
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

		e.describe("a second receiver while a session is in progress", func() {
			run := e.lazySender(senderScenario{fixtures: one, script: func(s *receiverScript) {
				p, err := s.dial()
				if err != nil {
					return
				}
				defer p.close()
				p.send(hello1())
				first := s.readSet(p)
				s.refusedSession(func(q *wirePeer) error { return q.send(hello1()) })
				s.result()
				s.finishSession(p, first, wire.AppendCount(nil, wire.TypeAck, uint32(len(first.records))), true)
				s.result()
			}})
			e.verify("is answered ERROR BUSY, and the first session goes on", "AUTH-4", func() {
				r := run()
				r.mustServe()
				r.expectRecords(r.session(0))
				second := r.session(1)
				Expect(second.received).To(BeZero(), r.transcript())
				Expect(second.errFrame).NotTo(BeNil(), "no ERROR frame"+r.transcript())
				Expect(second.errFrame.Code).To(Equal(wire.CodeBusy), r.transcript())
				Expect(r.result(0).reply.OK).To(BeFalse(), "the refused session counted as done"+r.transcript())
				Expect(r.result(1).reply.Outcome).To(Equal("ready"), r.transcript())
			})
		})
	})
}
