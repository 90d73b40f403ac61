#!/usr/bin/env python3
"""Conformance adapter (spec/adapter.md, contract 1) around pygraceful.

Run by graceful-conformance:
    go run ./conformance/cmd/graceful-conformance --adapter 'python3 conformance/adapters/python/adapter.py'
Requests arrive as JSON lines on stdin, answers leave as JSON lines on stdout,
logs go to stderr.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import queue
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pygraceful as pg  # noqa: E402

CONTRACT = 1
IMPLEMENTATION = "pygraceful 1.1 (Python %d.%d standard library)" % sys.version_info[:2]
FEATURES = ["kv", "sessions", "dial", "authorize", "limits", "abstract"]
MAX_CHALLENGE_READ = 65536

KIND_BY_NAME = {k.name.lower(): k for k in pg.Kind}

_log_lock = threading.Lock()


def log(msg: str) -> None:
    with _log_lock:
        sys.stderr.write(f"pygraceful-adapter[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()


class BadRequest(Exception):
    """A request the adapter cannot parse or does not know: exit status 2."""


def policy(req: dict):
    """Feature authorize: the peer's uid must be one of req["authorize"]["uids"]."""
    auth = req.get("authorize")
    if auth is None:
        return None
    uids = set(auth.get("uids") or [])
    return lambda cred: cred.uid in uids


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"bad base64 {text!r}: {e}") from e


def failure(err: Exception) -> dict:
    if isinstance(err, pg.GracefulError):
        return {"ok": False, "error": {"code": err.code, "message": err.message}}
    return {"ok": False, "error": {"code": "OTHER", "message": str(err) or repr(err)}}


def seconds(ms: int) -> float:
    return ms / 1000.0


class Adapter:
    def __init__(self) -> None:
        self.server: pg.Server | None = None
        self.served_fds: list[int] = []
        self.results: queue.Queue[pg.Result] = queue.Queue()
        self.result_wait = 30.0
        self.received: list[pg.Descriptor] = []  # of the last receive, in hand-over order
        self.held_fds: list[int] = []  # every descriptor handed to us, closed at exit

    # -- hello ---------------------------------------------------------------

    def hello(self, req: dict) -> dict:
        contracts = req.get("contracts")
        if not isinstance(contracts, list):
            raise BadRequest("hello without contracts")
        if CONTRACT not in contracts:
            return {"ok": False, "error": {"code": "OTHER", "message": f"contracts {contracts}: this adapter speaks {CONTRACT}"}}
        return {"ok": True, "contract": CONTRACT, "implementation": IMPLEMENTATION,
                "pid": os.getpid(), "features": FEATURES}

    # -- sender --------------------------------------------------------------

    def server_for(self, req: dict, done) -> pg.Server:
        """A Server for a serve or send request (GracefulError if the set is refused)."""
        descriptors = []
        for item in req["descriptors"]:
            kind = KIND_BY_NAME.get(item.get("kind"))
            if kind is None or not isinstance(item.get("fd"), int):
                raise BadRequest(f"bad descriptor {item!r}")
            if item.get("kv") is not None:
                try:
                    meta = pg.encode_kv(item["kv"])
                except (UnicodeEncodeError, AttributeError) as e:
                    raise pg.GracefulError("OTHER", f"kv {item['kv']!r}: {e}") from e
            else:
                meta = unb64(item.get("meta"))
            descriptors.append(pg.Descriptor(item["fd"], kind, meta))
            self.served_fds.append(item["fd"])
        timeout = seconds(req["timeout_ms"])
        ready_timeout = seconds(req["ready_timeout_ms"])
        self.result_wait = max(30.0, 4 * (timeout + ready_timeout))
        options = {}
        if req.get("session_timeout_ms") is not None:
            options["session_timeout"] = seconds(req["session_timeout_ms"])
        if req.get("max_pending") is not None:
            options["max_pending"] = req["max_pending"]
        return pg.Server(descriptors, timeout=timeout, ready_timeout=ready_timeout,
                         authorize=policy(req), done=done, **options)

    def serve(self, req: dict) -> dict:
        if self.server is not None:
            return failure(pg.GracefulError("OTHER", "already serving"))

        def done(result: pg.Result) -> None:
            log(f"connection ended: {result.outcome or result.error}")
            self.results.put(result)

        try:
            server = self.server_for(req, done)
        except pg.GracefulError as e:
            return failure(e)
        try:
            server.listen(req["socket"])
        except (pg.GracefulError, OSError) as e:
            server.close()
            return failure(e)
        server.start()
        self.server = server
        return {"ok": True}

    def send(self, req: dict) -> dict:
        """Feature dial: connect to a listening receiver and serve that connection."""
        try:
            server = self.server_for(req, lambda result: None)
        except pg.GracefulError as e:
            return failure(e)
        try:
            conn = pg.Conn(pg.connect(req["socket"], server.timeout), receiver=False)
            try:
                outcome = server.serve_conn(conn)
            finally:
                conn.close()
        except pg.GracefulError as e:
            return failure(e)
        finally:
            server.close()
        return {"ok": True, "outcome": outcome}

    def result(self, req: dict) -> dict:
        if self.server is None:
            return failure(pg.GracefulError("OTHER", "result before serve"))
        try:
            result = self.results.get(timeout=self.result_wait)
        except queue.Empty:
            return failure(pg.GracefulError("TIMEOUT", f"no connection finished within {self.result_wait:.0f}s"))
        if result.error is not None:
            return failure(result.error)
        return {"ok": True, "outcome": result.outcome}

    # -- receiver ------------------------------------------------------------

    def receive(self, req: dict) -> dict:
        reject = req.get("reject")
        handed: list[pg.Descriptor] = []

        def take(d: pg.Descriptor) -> None:
            handed.append(d)  # ours from here on, refused or not
            self.held_fds.append(d.fd)
            if reject is not None and len(handed) - 1 == reject:
                raise ValueError("refused by the adapter (reject)")

        answer: dict = {"ok": True}
        options = {}
        if req.get("session_timeout_ms") is not None:
            options["session_timeout"] = seconds(req["session_timeout_ms"])
        if req.get("max_fds") is not None or req.get("max_meta_bytes") is not None:
            options["limits"] = pg.Limits(req.get("max_fds") or pg.DEFAULT_MAX_FDS,
                                          req.get("max_meta_bytes") or pg.DEFAULT_MAX_META)
        try:
            pg.receive(req["socket"], take, timeout=seconds(req["timeout_ms"]), ready=bool(req["ready"]),
                       sessions=req.get("sessions") or 1, authorize=policy(req), **options)
        except pg.GracefulError as e:
            answer = failure(e)  # UNCONFIRMED included: the descriptors are listed either way
        self.received = handed
        answer["descriptors"] = [self.describe(d, bool(req.get("kv"))) for d in handed]
        return answer

    @staticmethod
    def describe(d: pg.Descriptor, kv: bool) -> dict:
        out = {"fd": d.fd, "kind": d.kind.name.lower(), "meta": b64(d.meta)}
        if kv:
            out["kv"] = None
            if d.meta is not None:
                try:
                    out["kv"] = pg.decode_kv(d.meta)
                except ValueError as e:
                    out["kv_error"] = str(e)
        return out

    def challenge(self, req: dict) -> dict:
        index = req["index"]
        if not 0 <= index < len(self.received):
            return failure(pg.GracefulError("OTHER", f"no descriptor {index}: {len(self.received)} received"))
        fd = self.received[index].fd
        timeout = seconds(req["timeout_ms"])
        action = req["action"]
        try:
            if action == "accept":
                data = accept_and_read(fd, timeout)
            elif action == "recv":
                data = recv_once(fd, timeout)
            elif action == "pread":
                data = pread_all(fd, req["length"], req["offset"])
            else:
                raise BadRequest(f"unknown challenge action {action!r}")
        except (OSError, pg.GracefulError) as e:
            return failure(e)
        return {"ok": True, "data": b64(data)}

    # -- exit ----------------------------------------------------------------

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        pg.close_fds(self.held_fds)
        pg.close_fds(self.served_fds)
        self.held_fds, self.served_fds, self.received = [], [], []

    def exit(self, req: dict) -> dict:
        self.close()
        return {"ok": True, "done": True}


# -- challenges: never change the flags of a received descriptor, whose open
# file description is shared with the sender (it may be non-blocking).


def wait_readable(fd: int, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        raise pg.GracefulError("TIMEOUT", "descriptor not readable before the deadline")


def borrowed_socket(fd: int) -> socket.socket:
    """A socket object on a duplicate of fd that leaves its flags alone."""
    assert socket.getdefaulttimeout() is None  # else socket() would set O_NONBLOCK
    return socket.socket(fileno=os.dup(fd))


def accept_and_read(fd: int, timeout: float) -> bytes:
    listener = borrowed_socket(fd)
    deadline = time.monotonic() + timeout
    try:
        while True:
            wait_readable(fd, deadline)
            try:
                conn, _ = listener.accept()
                break
            except BlockingIOError:
                continue  # someone else took it, or a spurious wake-up
    finally:
        listener.close()
    with conn:
        data = bytearray()
        while len(data) < MAX_CHALLENGE_READ:
            conn.settimeout(timeout)  # a new description of our own: ours to set
            try:
                chunk = conn.recv(MAX_CHALLENGE_READ - len(data))
            except TimeoutError:
                raise pg.GracefulError("TIMEOUT", "accepted connection did not end before the deadline") from None
            if not chunk:
                break
            data += chunk
    return bytes(data)


def recv_once(fd: int, timeout: float) -> bytes:
    sock = borrowed_socket(fd)
    deadline = time.monotonic() + timeout
    try:
        while True:
            wait_readable(fd, deadline)
            try:
                return sock.recv(MAX_CHALLENGE_READ, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
    finally:
        sock.close()


def pread_all(fd: int, length: int, offset: int) -> bytes:
    data = bytearray()
    while len(data) < length:
        chunk = os.pread(fd, length - len(data), offset + len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


# -- main loop --------------------------------------------------------------


def write(answer: dict) -> None:
    sys.stdout.write(json.dumps(answer, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> int:
    adapter = Adapter()
    ops = {"hello": adapter.hello, "serve": adapter.serve, "result": adapter.result, "send": adapter.send,
           "receive": adapter.receive, "challenge": adapter.challenge, "exit": adapter.exit}
    first = True
    for line in sys.stdin:
        seq = None
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("seq"), int):
                raise BadRequest(f"not a request: {line!r}")
            seq = req["seq"]
            op = req.get("op")
            if op not in ops or (first and op != "hello"):
                raise BadRequest(f"unknown or misplaced op {op!r}")
            first = False
            answer = ops[op](req)
        except (BadRequest, ValueError, KeyError, TypeError) as e:
            log(f"bad request: {e!r}")
            if seq is not None:
                write({"seq": seq, **failure(pg.GracefulError("OTHER", f"bad request: {e}"))})
            adapter.close()
            return 2
        write({"seq": seq, **answer})
        if op == "hello" and not answer["ok"]:
            return 3
        if op == "exit":
            return 0
    log("stdin ended before exit")
    adapter.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
