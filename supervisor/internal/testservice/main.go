//go:build linux

// Command testservice is the service the supervisor's tests run as
// generations: a TCP server that answers every connection with one line
// naming its pid, and takes its listener over from its predecessor
// (graceful, with -handoff), from socket activation, or listens anew.
// What a generation does besides is read from -mode-file when it starts,
// so that a test can make the next generation misbehave:
//
//	exit               exit 3 before serving
//	hang               serve, never say READY=1
//	crash-after-ready  say READY=1, then exit 4
//	orphan             leave a child behind that outlives this process
//	child-env FILE     run a child that writes its environment and
//	                   descriptors to FILE, before READY=1
//	mainpid            serve from a child process, which says MAINPID=
//	unstore            store the listener (-fdstore), then remove it
//	nobody-ready       have a child running as uid 65534 say READY=1 (it
//	                   must not count), then never say it itself
//	handoff-after FIFO say READY=1 at once, but place the hand-off socket
//	                   only once a writer has opened the FIFO
//	hold-handoff FIFO  told to stop, keep serving the hand-off socket until
//	                   a writer has opened the FIFO
//	store-stall        after storing (-store-graceful), open a second
//	                   connection to the store socket and never speak on it
//	receive-after FIFO take over only once a writer has opened the FIFO
//	                   (a spare that is slow to start)
//	no-spare           started as a spare, do not wait for the turn: take
//	                   over at once (a program that ignores
//	                   GRACEFUL_SPARE_FD)
//
// SIGUSR1 makes it panic; SIGTERM and SIGINT make it stop serving and exit with
// -exit-code.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gracefulfd/graceful/graceful"
)

func main() {
	addr := flag.String("tcp", "127.0.0.1:0", "address to listen on when no listener is inherited")
	handoff := flag.String("handoff", "", "graceful hand-off socket")
	fdstore := flag.Bool("fdstore", false, "store the listener with the supervisor (FDSTORE=1, FDNAME=tcp)")
	storeGraceful := flag.Bool("store-graceful", false, "store the listener with the supervisor over the graceful protocol, at $GRACEFUL_STORE")
	modeFile := flag.String("mode-file", "", "file naming what this generation does")
	exitCode := flag.Int("exit-code", 0, "exit code after SIGTERM")
	dump := flag.String("dump", "", "write environment and descriptors to this file and exit")
	linger := flag.Bool("linger", false, "wait for the end of standard input, then exit")
	child := flag.Bool("child", false, "serve the inherited descriptor 3 as the main process")
	notifyFd3 := flag.String("notify-fd3", "", "send this datagram on the socket that is descriptor 3, and exit")
	flag.Parse()
	switch {
	case *notifyFd3 != "":
		if _, err := unix.Write(3, []byte(*notifyFd3)); err != nil {
			fmt.Fprintln(os.Stderr, "testservice:", err)
			os.Exit(1)
		}
		return
	case *dump != "":
		os.Exit(dumpEnv(*dump))
	case *linger:
		io.Copy(io.Discard, os.Stdin)
		return
	}
	if err := run(*addr, *handoff, *fdstore, *storeGraceful, *modeFile, *exitCode, *child); err != nil {
		fmt.Fprintln(os.Stderr, "testservice:", err)
		os.Exit(1)
	}
}

func run(addr, handoff string, fdstore, storeGraceful bool, modeFile string, exitCode int, child bool) error {
	// Signals before READY=1: a stop that comes right after it is not lost.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)

	mode, arg := "", ""
	if modeFile != "" {
		b, err := os.ReadFile(modeFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		mode, arg, _ = strings.Cut(strings.TrimSpace(string(b)), " ")
	}
	if mode == "exit" {
		fmt.Println("exiting before serving, as told")
		os.Exit(3)
	}

	switch mode {
	case "no-spare":
		os.Unsetenv(graceful.SpareEnv)
	case "receive-after":
		fmt.Println("taking over once the FIFO opens")
		waitForWriter(arg)
	}
	var ln net.Listener
	var err error
	if child {
		ln, err = graceful.FdListener(3)
	} else {
		ln, err = takeOver(addr, handoff)
	}
	if err != nil {
		return err
	}
	if mode == "mainpid" && !child {
		return serveFromChild(ln)
	}
	served := make(chan struct{})
	go func() { serve(ln); close(served) }()
	fmt.Printf("serving %s (ppid %d)\n", ln.Addr(), os.Getppid())

	var hs *graceful.Server
	if handoff != "" && !child {
		hs = &graceful.Server{Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": "tcp"})}
		go func() {
			if mode == "handoff-after" {
				waitForWriter(arg)
			}
			hs.ListenAndServe(handoff) // once the previous generation lets go of the path
		}()
	}
	if fdstore {
		if _, err := graceful.SdStore("tcp", ln.(*net.TCPListener)); err != nil {
			return err
		}
	}
	if storeGraceful {
		if err := storeOverGraceful(ln); err != nil {
			return err
		}
	}
	if mode == "store-stall" {
		c, err := graceful.Dial(os.Getenv("GRACEFUL_STORE"))
		if err != nil {
			return err
		}
		defer c.Close() // held, silent, until this process stops
		fmt.Println("stalling the store socket")
	}
	switch mode {
	case "unstore":
		if _, err := graceful.SdStoreRemove("tcp"); err != nil {
			return err
		}
	case "nobody-ready":
		if err := readyAsNobody(); err != nil {
			return err
		}
		mode = "hang"
	case "orphan":
		cmd := exec.Command(os.Args[0], "-linger")
		if _, err := cmd.StdinPipe(); err != nil { // its write end dies with us
			return err
		}
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		fmt.Printf("orphan %d\n", cmd.Process.Pid)
	case "child-env":
		cmd := exec.Command(os.Args[0], "-dump", arg)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("child: %v: %s", err, out)
		}
	}
	if child {
		graceful.SdNotify(graceful.NotifyMainPID(os.Getpid()))
	}
	if mode != "hang" {
		if _, err := graceful.SdNotify(graceful.NotifyReady, graceful.NotifyStatus("listening "+ln.Addr().String())); err != nil {
			return err
		}
	}
	if mode == "crash-after-ready" {
		os.Exit(4)
	}
	for sig := range sigs {
		if sig == syscall.SIGUSR1 {
			panic("told to panic")
		}
		break
	}
	graceful.SdNotify(graceful.NotifyStopping)
	if mode == "hold-handoff" {
		fmt.Println("holding the hand-off socket")
		waitForWriter(arg)
	}
	if hs != nil {
		hs.Close()
	}
	ln.Close()
	<-served // the connection it had accepted is answered
	fmt.Println("stopped")
	os.Exit(exitCode)
	return nil
}

// takeOver gets the listener: from the previous generation, from socket
// activation, or anew.
// storeOverGraceful sends ln to the supervisor's store socket, named tcp.
func storeOverGraceful(ln net.Listener) error {
	c, err := graceful.Dial(os.Getenv("GRACEFUL_STORE"))
	if err != nil {
		return err
	}
	defer c.Close()
	return graceful.SendListenerTo(c, ln, graceful.Meta{"name": "tcp"})
}

// waitForWriter opens the FIFO at path, which waits for a writer.
func waitForWriter(path string) {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testservice:", err)
		os.Exit(1)
	}
	f.Close()
}

func takeOver(addr, handoff string) (net.Listener, error) {
	var ln net.Listener
	take := func(fd int, meta io.Reader) error {
		m, err := graceful.MetaFrom(meta)
		if err != nil || m["name"] != "tcp" || ln != nil {
			unix.Close(fd)
			return err
		}
		ln, err = graceful.FdListener(fd)
		return err
	}
	err := graceful.ErrNoServer
	if handoff != "" {
		err = graceful.Receive(handoff, take)
	}
	if errors.Is(err, graceful.ErrNoServer) {
		err = graceful.ReceiveActivation(take)
	}
	if errors.Is(err, graceful.ErrNotActivated) {
		return net.Listen("tcp", addr)
	}
	if err == nil && ln == nil {
		err = errors.New("no descriptor named tcp")
	}
	return ln, err
}

func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "pid %d\n", os.Getpid())
		c.Close()
	}
}

// serveFromChild hands ln to a child that serves it and says MAINPID=,
// then waits for it: the supervisor must follow the child.
func serveFromChild(ln net.Listener) error {
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0], append([]string{"-child"}, os.Args[1:]...)...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	f.Close()
	ln.Close()
	fmt.Printf("main process %d\n", cmd.Process.Pid)
	cmd.Wait()
	return nil
}

// readyAsNobody has a child running as uid 65534 say READY=1 on a socket
// connected to NOTIFY_SOCKET.
func readyAsNobody() error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	f, err := conn.File()
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0], "-notify-fd3", graceful.NotifyReady)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("child as uid 65534: %v: %s", err, out)
	}
	fmt.Println("uid 65534 said READY=1")
	return nil
}

// dumpEnv writes the environment and the open descriptors, one a line.
func dumpEnv(path string) int {
	var b strings.Builder
	for _, kv := range os.Environ() {
		fmt.Fprintf(&b, "env %s\n", kv)
	}
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "fd %s %s\n", e.Name(), target)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return 1
	}
	return 0
}
