// Package harness starts real child processes, talks to them, and checks
// from the outside what they hold. The graceful library's integration
// tests use it to hand descriptors between processes, the conformance
// suite uses it to drive adapter programs, and cmd/restart-sim uses it to
// run generations of a server.
//
// # Starting a child
//
// Start runs a Cmd: either an arbitrary program (Path), or the current
// executable re-run as one of its named helpers (Helper). A test binary
// declares its helpers in a Helpers map and calls Helpers.Dispatch first
// thing in TestMain; in the child, Dispatch runs the helper chosen by the
// environment instead of the tests:
//
//	var helpers = harness.Helpers{
//		"echo": func(c *harness.Child) error {
//			var text string
//			if err := c.Control.Expect("say", &text); err != nil {
//				return err
//			}
//			return c.Control.Send("said", text)
//		},
//	}
//
//	func TestMain(m *testing.M) {
//		if code, ok := helpers.Dispatch(); ok {
//			os.Exit(code)
//		}
//		os.Exit(m.Run())
//	}
//
//	// in a test:
//	p, err := harness.Start(harness.Cmd{Helper: "echo"})
//	...
//	defer p.Kill()
//	err = p.Control().Send("say", "hello")
//
// A child gets exactly Cmd.Env (nothing of the parent's environment), its
// ExtraFiles as descriptors 3, 4, ..., and stdout and stderr copied to
// Cmd.Stdout and Cmd.Stderr. Unlike os/exec, Start never puts the
// descriptors it hands down into blocking mode. The harness's own
// environment variables are removed before a helper runs, so they never
// reach grandchildren.
//
// # The control channel
//
// A helper, or any program started with Cmd.Control, shares a Control with
// its parent: a unix socket pair carrying JSON lines, each a Msg with a
// type and optional data. Every Send and Recv has a deadline (Timeout,
// DefaultTimeout by default), so a hung or dead peer shows as an error
// (ErrTimeout, ErrControlClosed), never as a hung test. Expect reads one
// message and checks its type; a helper that fails sends ErrorType, which
// Expect turns into ErrPeerFailed with the helper's text.
//
// # Ending a child
//
// Each child is in its own process group. Process.Kill sends SIGKILL to
// the group, reaps the child and closes the control channel; it is safe to
// call at any time, and every Process must end with it (the harnesstest
// package registers it with DeferCleanup). Process.Wait waits with a
// deadline and never kills. A reaper goroutine collects the exit status as
// soon as the child exits, so no zombie stays behind.
//
// # Looking at descriptors from the outside
//
// ListFDs, DescribeFD and CountFDs read /proc/<pid>/fd and
// /proc/<pid>/fdinfo of any process the caller may inspect: the identity
// of the open file (st_dev and st_ino, the same in every process that
// shares it), its close-on-exec and O_NONBLOCK flags, its offset. A
// Snapshot taken before some work and compared after it (Opened, Closed,
// WaitNoneOpened) shows what the work left open; Accounting does the same
// for this process's descriptors and goroutines together.
//
// Package harness does not import Ginkgo or Gomega, so that programs can
// use it; package harnesstest wraps it for Ginkgo specs.
//
// Linux only: it reads /proc.
package harness
