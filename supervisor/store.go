//go:build linux

package supervisor

import (
	"log/slog"
	"net"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

// store is the file descriptor store: duplicates of what generations sent
// with FDSTORE=1, close-on-exec, in the order they came.
type store struct {
	fds []storedFd
}

type storedFd struct {
	name     string
	fd       int
	dev, ino uint64 // what it refers to: the same socket is kept once
}

// add keeps fds under name, and returns those it kept: one that refers to
// a file already stored, or beyond max, is closed.
func (s *store) add(name string, fds []int, max int, log *slog.Logger) (added []int) {
	for _, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			continue
		}
		if s.has(st.Dev, st.Ino) {
			unix.Close(fd)
			continue
		}
		if len(s.fds) >= max {
			log.Warn("descriptor store full: descriptor closed", "name", name, "max", max)
			unix.Close(fd)
			continue
		}
		s.fds = append(s.fds, storedFd{name: name, fd: fd, dev: st.Dev, ino: st.Ino})
		added = append(added, fd)
	}
	return added
}

func (s *store) has(dev, ino uint64) bool {
	for _, f := range s.fds {
		if f.dev == dev && f.ino == ino {
			return true
		}
	}
	return false
}

// remove closes and forgets the descriptors named name.
func (s *store) remove(name string) int {
	kept := s.fds[:0]
	n := 0
	for _, f := range s.fds {
		if f.name == name {
			unix.Close(f.fd)
			n++
			continue
		}
		kept = append(kept, f)
	}
	clear(s.fds[len(kept):])
	s.fds = kept
	return n
}

func (s *store) list() (fds []int, names []string) {
	for _, f := range s.fds {
		fds = append(fds, f.fd)
		names = append(names, f.name)
	}
	return fds, names
}

func (s *store) names() []string {
	_, names := s.list()
	if names == nil {
		names = []string{}
	}
	return names
}

func (s *store) closeAll() {
	for _, f := range s.fds {
		unix.Close(f.fd)
	}
	s.fds = nil
}

// handoffServer serves the store over the graceful protocol at the
// service's hand-off socket while no generation serves (Config.Handoff).
// It owns duplicates of the stored descriptors, and serves one receiver:
// its listener closes when the first session begins, so that the
// generation that takes the set finds the path free for its own server.
type handoffServer struct {
	srv  *graceful.Server
	fds  []int
	done chan struct{}
}

// openHandoff starts a fresh hand-off server, unless the store is empty.
func (st *state) openHandoff() {
	st.closeHandoff()
	if len(st.store.fds) == 0 {
		return
	}
	log := st.s.log
	h := &handoffServer{done: make(chan struct{})}
	type entry struct {
		fd   int
		kind graceful.Kind
		meta graceful.Meta
	}
	var set []entry
	for _, f := range st.store.fds {
		dup, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			log.Error("cannot serve the store", "err", err)
			closeFds(h.fds)
			return
		}
		h.fds = append(h.fds, dup)
		kind, err := graceful.KindOf(dup)
		if err != nil {
			kind = graceful.KindRaw
		}
		set = append(set, entry{dup, kind, graceful.Meta{"name": f.name}})
	}
	var ln net.Listener
	standby := st.takeStandby()
	if standby != nil {
		ln = standby
	} else {
		var err error
		ln, err = graceful.Listen(st.s.cfg.Handoff)
		if err != nil {
			log.Error("cannot serve the store at the hand-off socket", "path", st.s.cfg.Handoff, "err", err)
			closeFds(h.fds)
			return
		}
	}
	log.Info("serving the store at the hand-off socket", "path", st.s.cfg.Handoff, "standby", standby != nil)
	h.srv = &graceful.Server{
		Handler: graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			ln.Close() // one receiver: the path is the next generation's
			for _, e := range set {
				if err := w.WriteKind(e.fd, e.kind, e.meta); err != nil {
					return
				}
			}
		}),
		Done: func(err error) {
			if err == nil {
				log.Info("the next generation took the stored descriptors", "path", st.s.cfg.Handoff)
			} else {
				log.Warn("hand-off of the stored descriptors failed", "err", err)
			}
		},
	}
	go func() {
		defer close(h.done)
		h.srv.Serve(ln)
	}()
	st.handoff = h
}

func (st *state) closeHandoff() {
	h := st.handoff
	if h == nil {
		return
	}
	st.handoff = nil
	h.srv.Close()
	<-h.done
	closeFds(h.fds)
}
