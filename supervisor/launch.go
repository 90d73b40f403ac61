//go:build linux

package supervisor

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// launch is what starting a generation needs that does not depend on the
// moment of the start: its standard input (/dev/null), its output pipes,
// whose copies already run, and its environment. The supervisor makes the
// next generation's while the serving one serves, so that a restart or a
// crash recovery begins with the fork.
type launch struct {
	n                   int // the generation it was made for: the prefix of its lines
	devNull, outW, errW int
	env                 []string
}

// newLaunch makes generation n's launch.
func (s *Supervisor) newLaunch(n int) (*launch, error) {
	l := &launch{n: n, devNull: -1, outW: -1, errW: -1}
	var err error
	if l.devNull, err = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, os.NewSyscallError("open "+os.DevNull, err)
	}
	prefix := []byte("[gen " + strconv.Itoa(n) + "] ")
	if l.outW, err = s.outputs.pipe(prefix, s.cfg.Stdout); err != nil {
		l.close()
		return nil, err
	}
	if l.errW, err = s.outputs.pipe(prefix, s.cfg.Stderr); err != nil {
		l.close()
		return nil, err
	}
	store := ""
	if s.store != nil {
		store = s.store.path
	}
	l.env = generationEnv(s.cfg.Env, s.notify.path, store)
	return l, nil
}

// close closes this process's ends: once the generation started with them
// holds the only other ones, its output copies end when it does.
func (l *launch) close() {
	for _, fd := range []int{l.devNull, l.outW, l.errW} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	l.devNull, l.outW, l.errW = -1, -1, -1
}

// takeLaunch returns generation n's launch: the one made in advance when
// it was for n, or a new one.
func (st *state) takeLaunch(n int) (*launch, error) {
	if l := st.nextLaunch; l != nil {
		st.nextLaunch = nil
		if l.n == n {
			return l, nil
		}
		l.close()
	}
	return st.s.newLaunch(n)
}

// prepareLaunch makes the next generation's launch in advance, unless it
// is there or the supervisor stops. Failing here costs nothing: the start
// makes its own.
func (st *state) prepareLaunch() {
	n := st.next + 1
	if st.stopping || (st.nextLaunch != nil && st.nextLaunch.n == n) {
		return
	}
	st.dropLaunch()
	if l, err := st.s.newLaunch(n); err == nil {
		st.nextLaunch = l
	}
}

// dropLaunch closes the launch made in advance, if any.
func (st *state) dropLaunch() {
	if st.nextLaunch != nil {
		st.nextLaunch.close()
		st.nextLaunch = nil
	}
}
