//go:build linux

package harness

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Exit codes of a helper process, as Dispatch returns them.
const (
	// ExitHelperFailed: the helper returned an error (it was also sent as
	// an ErrorType message and printed on stderr).
	ExitHelperFailed = 1
	// ExitNoHelper: HelperEnv named no registered helper, or the control
	// channel could not be opened.
	ExitNoHelper = 2
)

// Child is what a helper gets: its name, its arguments and its end of the
// control channel.
type Child struct {
	Name    string
	Args    []string
	Control *Control
}

// HelperFunc is the body of a helper process. A returned error is
// reported to the parent and makes the process exit with
// ExitHelperFailed. Gomega and Ginkgo are not running in a helper: return
// errors instead.
type HelperFunc func(c *Child) error

// Helpers maps names to the functions a re-executed test binary can run
// as a child (see Cmd.Helper). A test suite declares one Helpers value and
// dispatches it first thing in TestMain:
//
//	var helpers = harness.Helpers{"echo": echo}
//
//	func TestMain(m *testing.M) {
//		if code, ok := helpers.Dispatch(); ok {
//			os.Exit(code)
//		}
//		os.Exit(m.Run())
//	}
type Helpers map[string]HelperFunc

// Dispatch runs the helper this process was started for, when HelperEnv
// names one, and returns its exit code and true. In any other process it
// does nothing and returns false. Before the helper runs, it removes the
// harness's variables from the environment and closes any descriptor the
// helper inherited by accident (one the parent had not made
// close-on-exec, above the control channel's), so that a helper starts
// with stdin, stdout, stderr, its ExtraFiles and its control channel only.
func (h Helpers) Dispatch() (code int, ok bool) {
	name, ok := os.LookupEnv(HelperEnv)
	if !ok {
		return 0, false
	}
	closeStrays()
	ctl, err := ChildControl()
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: helper %q: %v\n", name, err)
		return ExitNoHelper, true
	}
	defer ctl.Close()
	fn := h[name]
	if fn == nil {
		err := fmt.Errorf("harness: no helper named %q in this program", name)
		fmt.Fprintln(os.Stderr, err)
		ctl.Fail(err)
		return ExitNoHelper, true
	}
	if err := fn(&Child{Name: name, Args: os.Args[1:], Control: ctl}); err != nil {
		fmt.Fprintf(os.Stderr, "harness: helper %q: %v\n", name, err)
		ctl.Fail(err)
		return ExitHelperFailed, true
	}
	return 0, true
}

// closeStrays closes the descriptors above the control channel's that are
// not close-on-exec: the Go runtime opens its own close-on-exec, so these
// came from the parent, which had not marked them (os/exec and Start hand
// such descriptors down as every fork does).
func closeStrays() {
	control, err := strconv.Atoi(os.Getenv(ControlEnv))
	if err != nil {
		return
	}
	fds, err := ListFDs(os.Getpid())
	if err != nil {
		return
	}
	for _, fd := range fds {
		if fd.Num > control && !fd.CloseOnExec() {
			unix.Close(fd.Num)
		}
	}
}
