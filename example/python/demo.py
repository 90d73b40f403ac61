#!/usr/bin/env python3
"""A web service in Python that restarts without refusing a connection.

Standard library only, with the conformance suite's Python implementation of
the graceful protocol (conformance/adapters/python/pygraceful.py). It follows
the same conventions as the Go demo beside it (godemo/) and example/, so that
a generation of one hands its listener to a generation of the other:

- the listening socket travels under the name "http" (graceful metadata
  {"name": "http"}, systemd's FDNAME=http);
- a starting generation takes it from the serving one over the hand-off
  socket (--handoff), else from socket activation (LISTEN_FDS, which
  graceful-supervisor and systemd set from their descriptor store), else
  listens on --addr;
- it stores the listener with the service manager (FDSTORE=1), says
  READY=1 once it serves, and on SIGTERM (or SIGINT) stops accepting,
  finishes the requests it has, and exits.

Run it under the supervisor, and restart it as often as you like:

    graceful-supervisor -handoff /tmp/demo.sock -- example/python/demo.py --handoff /tmp/demo.sock
    graceful-supervisor restart
"""

from __future__ import annotations

import argparse
import array
import errno
import http.server
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                "..", "..", "conformance", "adapters", "python"))
import pygraceful  # noqa: E402

NAME = "http"


def sd_notify(state: str, fds: list[int] | None = None) -> bool:
    """Send state to the service manager at $NOTIFY_SOCKET, fds attached.

    Returns False when there is no service manager.
    """
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # an abstract address
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendmsg([state.encode()], ancillary, 0, addr)
    return True


def from_predecessor(path: str) -> socket.socket | None:
    """The listener of the generation serving at path; None if none serves."""
    got: list[socket.socket] = []

    def take(d: pygraceful.Descriptor) -> None:
        meta = pygraceful.decode_kv(d.meta) if d.meta is not None else {}
        if meta.get("name") == NAME and not got:
            got.append(socket.socket(fileno=d.fd))
        else:
            os.close(d.fd)

    try:
        pygraceful.receive(path, take)
    except pygraceful.GracefulError as e:
        # pygraceful names no "nobody listens" error: a failed connect is it.
        if e.code == "OTHER" and e.message.startswith("connect "):
            return None
        raise
    if not got:
        raise RuntimeError(f"the previous generation sent no descriptor named {NAME!r}")
    return got[0]


def from_activation() -> socket.socket | None:
    """The listener named NAME from socket activation, if any.

    The variables are removed whatever the outcome, so that children do not
    inherit them, and every descriptor is made close-on-exec.
    """
    pid = os.environ.pop("LISTEN_PID", "")
    count = os.environ.pop("LISTEN_FDS", "")
    names = os.environ.pop("LISTEN_FDNAMES", "").split(":")
    if pid != str(os.getpid()) or not count.isdigit():
        return None
    found = None
    for i in range(int(count)):
        fd = 3 + i
        os.set_inheritable(fd, False)
        if found is None and i < len(names) and names[i] == NAME:
            found = socket.socket(fileno=fd)
        else:
            os.close(fd)
    return found


def place(handoff: pygraceful.Server, path: str, wait: float = 10.0) -> None:
    """handoff.listen(path), again while something is in the way (EADDRINUSE:
    the predecessor's socket, live until it closes it), for up to wait."""
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        try:
            handoff.listen(path)
            return
        except OSError as e:
            if e.errno != errno.EADDRINUSE or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.1)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from python pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:8080", help="address to listen on at a first start")
    parser.add_argument("--handoff", default="/tmp/graceful-example.sock", help="graceful hand-off socket")
    args = parser.parse_args()

    # The stop signals are blocked before any thread starts (threads
    # inherit the mask), and the main thread takes them with sigwait: a
    # handler would not run while the main thread waits, if the kernel
    # delivered the signal to another thread.
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)

    ln = from_predecessor(args.handoff)
    how = "took it over"
    if ln is None:
        ln = from_activation()
        how = "from socket activation"
    if ln is None:
        host, _, port = args.addr.rpartition(":")
        ln = socket.create_server((host, int(port)))
        how = "listening anew"
    addr = "%s:%d" % ln.getsockname()[:2]
    print(f"serving http on {addr} ({how})", flush=True)

    httpd = http.server.ThreadingHTTPServer(ln.getsockname()[:2], Handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = ln
    httpd.daemon_threads = False  # server_close waits for the requests in flight
    serving = threading.Thread(target=httpd.serve_forever, name="http")
    serving.start()

    meta = pygraceful.encode_kv({"name": NAME})
    handed_over = threading.Event()

    def done(result: pygraceful.Result) -> None:
        if result.outcome == pygraceful.READY:
            handed_over.set()

    handoff = pygraceful.Server([pygraceful.Descriptor(ln.fileno(), pygraceful.Kind.LISTENER, meta)], done=done)
    sd_notify(f"FDSTORE=1\nFDNAME={NAME}", [ln.fileno()])
    sd_notify(f"READY=1\nSTATUS=serving http on {addr}")
    # The predecessor's hand-off socket answers until it has heard our
    # READY and closed it: pygraceful, like graceful, replaces only a
    # stale socket, so wait for that (bounded) before placing ours.
    place(handoff, args.handoff)
    handoff.start()
    # Once a successor has the listener, this generation offers it no more:
    # its socket goes, and the successor places its own.
    threading.Thread(target=lambda: (handed_over.wait(), handoff.close()), name="retire", daemon=True).start()

    signal.sigwait(stops)
    sd_notify("STOPPING=1")
    handoff.close()
    httpd.shutdown()  # stops accepting: what is queued is the next generation's
    serving.join()
    httpd.server_close()  # closes this copy of the listener, after the requests in flight
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
