// Package graceful hands live file descriptors (listening and connected
// TCP sockets, UDP sockets, unix sockets, plain files) from one process to
// another over a unix domain socket, so that a service can restart or
// upgrade without dropping a single connection.
//
// The process that owns the descriptors is the server, in this package's
// words; the process that takes them is the client. The wire protocol is
// language-neutral and specified in spec/protocol.md of this repository.
//
// # A graceful restart
//
// The running instance offers its listener, then starts its successor:
//
//	ln, _ := net.Listen("tcp", ":8080")
//	srv := &graceful.Server{
//		Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": "http"}),
//		Done: func(err error) {
//			if err == nil { // the successor has the listener and serves
//				drainAndExit()
//			}
//		},
//	}
//	go srv.ListenAndServe("/run/app/handoff.sock")
//
// The successor asks for the descriptors before it opens its own. On a
// first start nobody answers, and Receive says so with ErrNoServer:
//
//	err := graceful.Receive("/run/app/handoff.sock", func(fd int, meta io.Reader) error {
//		m, err := graceful.MetaFrom(meta)
//		if err != nil {
//			return err
//		}
//		if m["name"] == "http" {
//			ln, err = graceful.FdListener(fd)
//			return err
//		}
//		return unix.Close(fd)
//	})
//	if errors.Is(err, graceful.ErrNoServer) {
//		ln, err = net.Listen("tcp", ":8080")
//	}
//
// Both processes now hold the same listening socket, with one accept
// queue: no connection is refused while the old process drains. For a
// net/http server, HTTPDrainer drains without dropping the requests of
// connections the old process had already accepted.
//
// # Guarantees
//
//   - A set of descriptors is delivered whole or not at all: the callback
//     runs only after every descriptor of the set has arrived and been
//     checked. Every descriptor received is either given to the callback
//     or closed, on every error path, including truncated control data
//     (ErrTruncated) and a peer that dies mid-set (ErrPeerClosed).
//   - Received descriptors are close-on-exec. Sending never changes a
//     descriptor's blocking mode and never duplicates it; values written
//     through the Handler helpers are kept alive until they are sent.
//   - Every blocking step has a deadline (Client.Timeout, Server.Timeout).
//   - The server's socket file is created with mode 0600, and by default
//     only a peer running as the same effective user may take the
//     descriptors (Server.Authorize changes the policy).
//   - The server reports success (Server.Done with nil) only when the
//     receiver acknowledged the whole set and said it was ready.
//
// # Connections
//
// Server (ListenAndServe, or Listen and Serve) runs one session per
// receiver that connects; ServeConn runs sessions on a connection you
// made. Receive dials, receives one set and says ready; ReceiveFrom and
// Ready do the same on your own connection, so that you can say ready
// once you serve. The Send*To functions send one descriptor per session on
// your connection. On the sockets it owns (those Receive dials and those a
// Server accepts), the library waits on the calling thread, in poll with
// the step's deadline as its timeout, rather than in Go's poller: each
// wait is one system call that the kernel wakes directly, and a deadline
// costs nothing more. Your own connections keep Go's poller and get their
// deadlines cleared when a session ends.
//
// On Linux, a Server serving a *net.UnixListener runs each session on the
// goroutine that accepted it and waits for the next receiver briefly on
// that thread before it waits in Go's poller: receivers that follow one
// another cost no goroutine and no thread hand-over. When a session waits
// on its peer for more than a millisecond, another goroutine starts
// accepting, so that other receivers are answered (BUSY) meanwhile. The
// Handler's conn is then the session's socket for Control (SO_PEERCRED and
// the like) and LocalAddr/RemoteAddr; its Read and Write fail, its Close
// ends the session. Other listeners are served through package net, with a
// goroutine per connection and the *net.UnixConn as the Handler's conn.
//
// # Ownership
//
// The callback given to Receive owns each fd it is called with, even if
// it returns an error. FdListener, FdConn and FdPacketConn take ownership of
// the fd they are given: it is closed whatever the outcome, and a returned
// value holds its own duplicate. Descriptors given to a ResponseWriter
// remain the caller's and must stay open until the session is over.
//
// # Deployment
//
// Put the socket in a directory only the service's user can enter, such as
// systemd's RuntimeDirectory (/run/app). Under systemd, use a Type=notify or
// Type=simple unit whose main process is a small supervisor, or let the new
// instance be started by the old one and tell systemd of the new main PID
// (sd_notify MAINPID=). In a container the process that exits last is PID 1:
// run a supervisor as PID 1 that outlives every generation and reaps them,
// as cmd/restart-sim does. Do not pass LISTEN_FDS-style variables on to
// the new generation's children.
package graceful
