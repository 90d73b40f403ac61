//go:build linux

package harness_test

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/gracefulfd/graceful/harness"
)

// A helper runs in a re-executed test binary; the parent starts it by
// name and talks to it over the control channel.
func ExampleHelpers_Dispatch() {
	helpers := harness.Helpers{
		"greet": func(c *harness.Child) error {
			var name string
			if err := c.Control.Expect("name", &name); err != nil {
				return err
			}
			return c.Control.Send("greeting", "hello, "+name)
		},
	}
	// First thing in TestMain:
	if code, ok := helpers.Dispatch(); ok {
		os.Exit(code)
	}
}

func ExampleStart() {
	p, err := harness.Start(harness.Cmd{Helper: "greet", Stderr: os.Stderr})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Kill() // always: kills the group if need be, reaps, closes the channel
	if err := p.Control().Send("name", "parent"); err != nil {
		fmt.Println(err)
		return
	}
	var greeting string
	if err := p.Control().Expect("greeting", &greeting); err != nil {
		fmt.Println(err)
		return
	}
	exit, err := p.Wait(10 * time.Second)
	fmt.Println(greeting, exit, err)
}

// A listener handed down as descriptor 3 keeps its non-blocking mode.
func ExampleCmd_extraFiles() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	p, err := harness.Start(harness.Cmd{
		Path:       "/usr/local/bin/server",
		Args:       []string{"-listen-fd=3"},
		Env:        []string{"PATH=/usr/bin:/bin"},
		ExtraFiles: []syscall.Conn{ln.(*net.TCPListener)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Kill()
	fd, err := harness.DescribeFD(p.Pid(), 3)
	fmt.Println(fd.NonBlocking(), err)
}

// Compare what two processes hold: the same socket has the same FileID.
func ExampleDescribeFD() {
	fds, err := harness.ListFDs(os.Getpid())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, fd := range fds {
		fmt.Println(fd.Num, fd.Target, fd.ID, fd.CloseOnExec(), fd.NonBlocking())
	}
}
