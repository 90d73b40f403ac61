// Package graceful hands live file descriptors (listening and connected
// TCP sockets, UDP sockets, unix sockets, plain files) from one process to
// another over a unix domain socket, so that a service can restart or
// upgrade without dropping a single connection.
//
// The process that owns the descriptors is the server, in this package's
// words; the process that takes them is the client. The wire protocol is
// language-neutral and specified in spec/protocol.md of this repository
// (version 1, revision 1.1).
//
// # A graceful restart
//
// The running instance offers its listener, then starts its successor.
// Once the successor has the listener and says it serves, the old
// instance closes its Server (from Done: it may) and drains:
//
//	ln, _ := net.Listen("tcp", ":8080")
//	srv := &graceful.Server{Handler: graceful.ListenerHandler(ln, graceful.Meta{"name": "http"})}
//	srv.Done = func(err error) {
//		if err == nil { // the successor has the listener and serves
//			srv.Close()
//			drainAndExit()
//		}
//	}
//	go srv.ListenAndServe("/run/app/handoff.sock")
//
// The successor asks for the descriptors before it opens its own. On a
// first start nobody answers, and Receive says so with ErrNoServer. Once
// the callback has had every descriptor, the set is the successor's, even
// if the old instance did not hear the acknowledgement (ErrUnconfirmed):
//
//	err := graceful.Receive("/run/app/handoff.sock", func(fd int, meta io.Reader) error {
//		m, err := graceful.MetaFrom(meta)
//		if err != nil {
//			unix.Close(fd)
//			return err
//		}
//		if m["name"] == "http" {
//			ln, err = graceful.FdListener(fd)
//			return err
//		}
//		return unix.Close(fd)
//	})
//	switch {
//	case errors.Is(err, graceful.ErrNoServer):
//		ln, err = net.Listen("tcp", ":8080")
//	case errors.Is(err, graceful.ErrUnconfirmed):
//		err = nil // we hold the set: serve with it
//	}
//
// The successor then calls ListenAndServe on the same path: it waits
// (up to Server.Timeout) while the old instance's Server still answers
// there, and replaces its socket once it is closed. Both processes hold the
// same listening socket, with one accept queue: no connection is refused
// while the old process drains. For a net/http server, HTTPDrainer drains
// without dropping the requests of connections the old process had
// already accepted.
//
// # Guarantees
//
//   - A set of descriptors is delivered whole or not at all: the callback
//     runs only after every descriptor of the set has arrived and been
//     checked. Every descriptor received is either given to the callback
//     or closed, on every error path, including truncated control data
//     (ErrTruncated), a peer that dies mid-set (ErrPeerClosed) and a set
//     over its limits (ErrTooLarge).
//   - Once every descriptor reached the callback, Receive, ReceiveFrom and
//     ReceiveAllFrom return nil or an error matching ErrUnconfirmed: the
//     set is the caller's. Any other error means no descriptor of the set
//     reached the callback (or the callback refused one: ErrRejected).
//   - Received descriptors are close-on-exec. Sending never changes a
//     descriptor's blocking mode and never duplicates it; values written
//     through the Handler helpers are kept alive until they are sent.
//   - Each side checks the other from the kernel's credentials of the
//     connection (SO_PEERCRED; getpeereid on macOS) before it reads or
//     writes a byte of the session: by default the peer must run as the
//     same effective user (Server.Authorize, Client.Authorize change the
//     policy), and a peer that shows as the kernel's overflow user or group
//     (an unmapped id of another user namespace) is always refused. A
//     refused peer is told UNAUTHORIZED and closed.
//   - Every blocking step has a deadline (Timeout, 10 s by default), and so
//     has every session as a whole (SessionTimeout, three steps by
//     default), on both sides. A receiver that acknowledged a set and never
//     says READY keeps other receivers out for ReadyTimeout at most (10 s by
//     default); meanwhile they are told BUSY (after waiting up to 2 ms for
//     the session to end), and Receive asks again until its own session
//     deadline.
//   - The server's socket file is created with mode 0600, never reachable
//     with wider permissions, and Listen replaces nothing but a stale
//     socket (ErrAddrInUse otherwise).
//   - The server reports success (Server.Done with nil) only when the
//     receiver acknowledged the whole set and said it was ready.
//
// # Hostile peers
//
// Whoever can connect to the socket can try to take the set, so the socket
// is the service's user's alone, and each side checks the other's
// credentials. A process of another user, or one that shows as the
// overflow id, is refused before a byte of the session is read. What a
// peer of the same user can still do, the protocol cannot prevent: take
// the set, or hold a session until its deadlines (and so keep other
// receivers out for that long).
//
// Against a flood of connections (of any user), a Server holds its
// resources per connection to a goroutine parked in Go's poller and a
// 20-byte buffer until the connection's HELLO is in, and keeps at most
// Server.MaxPending such connections (64 by default): the one waiting
// longest for its HELLO is closed when another arrives, and only among
// those that passed the credential check, so that a refused user's flood
// cannot close a served user's connection. No OS thread is held per
// connection. A frame is judged from its 8-byte header (its type at that
// point of the session, its length, a set's limits) before a byte of its
// payload is read. A sender reads with no room for control data, so a
// descriptor pushed at it is discarded by the kernel, never installed;
// on Linux 6.16 and later its sockets refuse descriptors altogether
// (SO_PASSRIGHTS). A receiver (Client) bounds each set: Client.MaxFds
// descriptors (16384) and Client.MaxMetaBytes bytes of metadata (16 MiB).
// The Logger of a Server writes at most a line a second for connections
// that fail before their HELLO, however many there are.
//
// # Addresses
//
// An address is a path or, on Linux, "@name": an abstract socket, which
// has no file and no permissions. Any process can bind or connect to an
// abstract name, so the credential checks are its only protection: a
// squatter of the name is refused by Receive as any sender of another user
// is. Every entry point (Listen, ListenAndServe, Receive, Dial, Send) takes
// both. A path may be of any length the file system takes: the library
// binds and connects through /proc/self/fd when the kernel's 108 bytes of
// sun_path would not hold it.
//
// # Connections
//
// Server (ListenAndServe, or Listen and Serve) runs one session per
// receiver that connects, each on a goroutine of its own, through package
// net; the Handler gets the *net.UnixConn. ServeConn runs sessions on a
// connection you made. Receive dials, receives one set and says ready;
// ReceiveFrom and Ready do the same on your own connection, so that you can
// say ready once you serve. The Send*To functions send one descriptor per
// session on your connection. The socket Receive dials is the Client's
// alone, and it waits on the calling thread, in poll with the step's
// deadline as its timeout, rather than in Go's poller: a receiver takes one
// thread for the length of its Receive. Your own connections keep Go's
// poller and get their deadlines cleared when a session ends.
//
// # Errors
//
// The exported functions return their errors, and Server.Done gets its
// errors, as an *OpError: the operation, the socket address and the cause,
// which matches the package's sentinel errors (errors.Is) and, for a
// deadline, os.ErrDeadlineExceeded; its text says what was waited for. A
// peer's ERROR frame matches the sentinel of its code.
//
// # Ownership
//
// The callback given to Receive owns each fd it is called with, even if
// it returns an error. FdListener, FdConn and FdPacketConn take ownership of
// the fd they are given: it is closed whatever the outcome, and a returned
// value holds its own duplicate. KindOf says what a descriptor is.
// Descriptors given to a ResponseWriter remain the caller's and must stay
// open until the session is over.
//
// # Deployment
//
// Put the socket in a directory only the service's user can enter, such as
// systemd's RuntimeDirectory (/run/app). Do not run the service as the
// overflow user or group (nobody, nogroup: 65534 usually): peers that show
// as those ids are refused. Under systemd, use a Type=notify or
// Type=simple unit whose main process is a small supervisor, or let the new
// instance be started by the old one and tell systemd of the new main PID
// (sd_notify MAINPID=). In a container the process that exits last is PID 1:
// run a supervisor as PID 1 that outlives every generation and reaps them:
// cmd/graceful-supervisor (package supervisor) is one. Do not pass
// LISTEN_FDS-style variables on to the new generation's children.
//
// A supervisor may start the next generation in advance, as a spare
// (SpareEnv): its first Receive or Dial then waits (AwaitTurn), without a
// deadline, until the supervisor says its turn has come, and fails with
// ErrSpareDismissed if it never does. A program that may run as a spare
// takes over before it does anything that only one instance may do.
package graceful
