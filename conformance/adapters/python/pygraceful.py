"""pygraceful: the graceful descriptor hand-off protocol, version 1, in Python.

An independent implementation of spec/protocol.md using only the Python 3.11
standard library, written from the specification alone. Both roles:

Receiver (the new process)::

    def take(d):                 # d is a Descriptor: fd, kind, meta
        keep.append(d)           # the callback owns d.fd from now on
    pygraceful.receive("/run/app.sock", take)          # HELLO ... ACK, READY

Sender (the old process)::

    server = pygraceful.Server([pygraceful.Descriptor(ln.fileno(), Kind.LISTENER, b"http")])
    server.listen("/run/app.sock")                      # mode 0600 from birth
    server.start()                                      # a thread per connection
    ...
    server.close()

Every blocking step has a deadline; every descriptor received is handed to
the user or closed; a failure raises GracefulError whose code is the
protocol's error name (section 8), "TIMEOUT" or "OTHER".
"""

from __future__ import annotations

import array
import collections
import dataclasses
import enum
import errno
import os
import select
import socket
import stat
import struct
import tempfile
import threading
import time
from typing import Callable, Iterable

VERSION = 1
MAGIC = b"GRACEFUL"
MAX_FDS_PER_BATCH = 252
MAX_META = 65536
MAX_PAYLOAD = 1 << 20
MAX_ERROR_MESSAGE = 1024
MAX_COUNT = 2**32 - 1
DEFAULT_TIMEOUT = 10.0
DEFAULT_READY_TIMEOUT = 30.0
HAS_META = 0x01

HEADER = struct.Struct(">BBHI")  # type, flags, nfds, length
RECORD = struct.Struct(">BBI")  # kind, rflags, meta_length
HELLO_PAYLOAD = struct.Struct(">8sHH")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
ERROR_HEAD = struct.Struct(">HH")


class FrameType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    BATCH = 3
    END = 4
    ACK = 5
    READY = 6
    ERROR = 7


class Kind(enum.IntEnum):
    RAW = 0
    FILE = 1
    LISTENER = 2
    STREAM = 3
    PACKET = 4


class Code(enum.IntEnum):
    MALFORMED = 1
    UNSUPPORTED_VERSION = 2
    UNAUTHORIZED = 3
    TOO_LARGE = 4
    TRUNCATED = 5
    REJECTED = 6
    SENDER_FAILED = 7
    PEER_CLOSED = 8
    BUSY = 9


# Payload lengths fixed by the frame type (section 3).
_FIXED_LENGTH = {
    FrameType.HELLO: HELLO_PAYLOAD.size,
    FrameType.WELCOME: U16.size,
    FrameType.END: U32.size,
    FrameType.ACK: U32.size,
    FrameType.READY: 0,
}

# Room for 253 descriptors (TRN-7) plus an SCM_CREDENTIALS and an SCM_PIDFD
# message, should the socket ever have SO_PASSCRED or SO_PASSPIDFD on.
ANCBUFSIZE = socket.CMSG_SPACE(253 * 4) + socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4)
# Linux's SCM_PIDFD (SO_PASSPIDFD), which Python 3.11 does not name.
SCM_PIDFD = getattr(socket, "SCM_PIDFD", 0x04)
_CLOEXEC_FLAG = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class GracefulError(Exception):
    """A failed session.

    code is a protocol error name ("MALFORMED", ... see Code), "TIMEOUT" when
    a deadline passed, or "OTHER". remote is True when the peer reported the
    failure in an ERROR frame (then code is the peer's code).
    """

    def __init__(self, code: str, message: str, *, remote: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.remote = remote


def _fail(code: str, message: str) -> GracefulError:
    return GracefulError(code, message)


@dataclasses.dataclass
class Descriptor:
    """One descriptor of a set: fd, its kind, and its metadata (None = none)."""

    fd: int
    kind: Kind = Kind.RAW
    meta: bytes | None = None


@dataclasses.dataclass
class Frame:
    type: int
    nfds: int
    payload: bytes


# ---------------------------------------------------------------------------
# Pure codec: no I/O.


def encode_frame(ftype: int, payload: bytes = b"", nfds: int = 0) -> bytes:
    return HEADER.pack(ftype, 0, nfds, len(payload)) + payload


def encode_hello(min_version: int = VERSION, max_version: int = VERSION) -> bytes:
    return encode_frame(FrameType.HELLO, HELLO_PAYLOAD.pack(MAGIC, min_version, max_version))


def encode_welcome(version: int) -> bytes:
    return encode_frame(FrameType.WELCOME, U16.pack(version))


def encode_count(ftype: int, count: int) -> bytes:
    return encode_frame(ftype, U32.pack(count))


def encode_error(code: int, message: str) -> bytes:
    text = message.encode("utf-8", "replace")[:MAX_ERROR_MESSAGE]
    text = text.decode("utf-8", "ignore").encode("utf-8")  # do not cut a character in two
    return encode_frame(FrameType.ERROR, ERROR_HEAD.pack(code, len(text)) + text)


def encode_batch(descriptors: list[Descriptor]) -> bytes:
    records = []
    for d in descriptors:
        meta = d.meta if d.meta is not None else b""
        rflags = HAS_META if d.meta is not None else 0
        records.append(RECORD.pack(int(d.kind), rflags, len(meta)) + meta)
    return encode_frame(FrameType.BATCH, b"".join(records), len(descriptors))


def check_header(ftype: int, flags: int, nfds: int, length: int) -> None:
    """Reject a frame header before its payload is read (FRM-2..4, RCV-2)."""
    if flags != 0:
        raise _fail("MALFORMED", f"frame type {ftype} has flags {flags:#x}, want 0")
    if ftype not in FrameType._value2member_map_:
        raise _fail("MALFORMED", f"unknown frame type {ftype}")
    if length > MAX_PAYLOAD:
        raise _fail("TOO_LARGE", f"{FrameType(ftype).name} payload of {length} bytes is over {MAX_PAYLOAD}")
    name = FrameType(ftype).name
    if ftype == FrameType.BATCH:
        if not 1 <= nfds <= MAX_FDS_PER_BATCH:
            raise _fail("MALFORMED", f"BATCH declares {nfds} descriptors, want 1..{MAX_FDS_PER_BATCH}")
        if length < nfds * RECORD.size:
            raise _fail("MALFORMED", f"BATCH of {nfds} records has only {length} bytes")
        return
    if nfds != 0:
        raise _fail("MALFORMED", f"{name} declares {nfds} descriptors, want 0")
    want = _FIXED_LENGTH.get(ftype)
    if want is not None and length != want:
        raise _fail("MALFORMED", f"{name} payload is {length} bytes, want {want}")
    if ftype == FrameType.ERROR and not ERROR_HEAD.size <= length <= ERROR_HEAD.size + MAX_ERROR_MESSAGE:
        raise _fail("MALFORMED", f"ERROR payload is {length} bytes, want 4..{4 + MAX_ERROR_MESSAGE}")


def decode_records(payload: bytes, nfds: int) -> list[tuple[Kind, bytes | None]]:
    """The nfds records of a BATCH payload, which they must fill exactly (RCV-2)."""
    records = []
    off = 0
    for i in range(nfds):
        if off + RECORD.size > len(payload):
            raise _fail("MALFORMED", f"BATCH record {i} runs past the payload")
        kind, rflags, meta_length = RECORD.unpack_from(payload, off)
        off += RECORD.size
        if kind not in Kind._value2member_map_:
            raise _fail("MALFORMED", f"BATCH record {i} has unknown kind {kind}")
        if rflags & ~HAS_META:
            raise _fail("MALFORMED", f"BATCH record {i} has unknown rflags {rflags:#x}")
        if meta_length > MAX_META:
            raise _fail("MALFORMED", f"BATCH record {i} has {meta_length} bytes of metadata, over {MAX_META}")
        if not rflags & HAS_META and meta_length != 0:
            raise _fail("MALFORMED", f"BATCH record {i} has no HAS_META but meta_length {meta_length}")
        if off + meta_length > len(payload):
            raise _fail("MALFORMED", f"BATCH record {i} metadata runs past the payload")
        meta = bytes(payload[off:off + meta_length]) if rflags & HAS_META else None
        off += meta_length
        records.append((Kind(kind), meta))
    if off != len(payload):
        raise _fail("MALFORMED", f"{len(payload) - off} bytes follow the last BATCH record")
    return records


def decode_error(payload: bytes) -> GracefulError:
    """The failure an ERROR frame reports, or MALFORMED if the frame is bad."""
    code, message_length = ERROR_HEAD.unpack_from(payload)
    if message_length > MAX_ERROR_MESSAGE or ERROR_HEAD.size + message_length != len(payload):
        return _fail("MALFORMED", f"ERROR message_length {message_length} does not match its {len(payload)}-byte payload")
    message = payload[ERROR_HEAD.size:].decode("utf-8", "replace")
    if code in Code._value2member_map_:
        name = Code(code).name
    else:  # ERR-3: an unknown code is a failure like any other
        name = "OTHER"
        message = f"unknown error code {code}: {message}"
    return GracefulError(name, f"peer reported: {message}", remote=True)


def plan_batches(descriptors: list[Descriptor]) -> list[list[Descriptor]]:
    """Split a set into BATCH frames of at most 252 descriptors and 1 MiB (SND-3, SND-6)."""
    batches: list[list[Descriptor]] = []
    current: list[Descriptor] = []
    size = 0
    for d in descriptors:
        record = RECORD.size + (len(d.meta) if d.meta is not None else 0)
        if current and (len(current) == MAX_FDS_PER_BATCH or size + record > MAX_PAYLOAD):
            batches.append(current)
            current, size = [], 0
        current.append(d)
        size += record
    if current:
        batches.append(current)
    return batches


def encode_kv(mapping: dict[str, str]) -> bytes:
    """Key-value metadata (section 5), keys sorted by their bytes (META-1)."""
    pairs = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in mapping.items())
    out = [U32.pack(len(pairs))]
    for key, value in pairs:
        out += [U32.pack(len(key)), key, U32.pack(len(value)), value]
    return b"".join(out)


def decode_kv(data: bytes) -> dict[str, str]:
    """Decode section 5 metadata; ValueError for anything META-2 rejects."""
    def take(off: int, n: int, what: str) -> int:
        if n > len(data) - off:
            raise ValueError(f"{what} runs past the end of the metadata")
        return off + n

    off = take(0, 4, "pair count")
    (pairs,) = U32.unpack_from(data, 0)
    out: dict[str, str] = {}
    for i in range(pairs):
        texts = []
        for part in ("key", "value"):
            start = take(off, 4, f"pair {i} {part} length")
            (n,) = U32.unpack_from(data, off)
            off = take(start, n, f"pair {i} {part}")
            try:
                texts.append(data[start:off].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ValueError(f"pair {i} {part} is not valid UTF-8") from e
        if texts[0] in out:
            raise ValueError(f"key {texts[0]!r} is repeated")
        out[texts[0]] = texts[1]
    if off != len(data):
        raise ValueError(f"{len(data) - off} bytes follow the last pair")
    return out


# ---------------------------------------------------------------------------
# Descriptors.


def close_fds(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def fds_from_ancdata(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of every SCM_RIGHTS message, in arrival order (TRN-6).

    SCM_PIDFD (Linux, with SO_PASSPIDFD on) carries a pidfd that nobody
    asked for: it is closed at once. Other control messages are ignored.
    A message cut short by truncation yields the descriptors that fit.
    """
    fds: list[int] = []
    for level, ctype, cdata in ancdata:
        if level != socket.SOL_SOCKET or ctype not in (socket.SCM_RIGHTS, SCM_PIDFD):
            continue
        got = array.array("i")
        got.frombytes(cdata[:len(cdata) - len(cdata) % got.itemsize])
        if ctype == SCM_PIDFD:
            close_fds(list(got))
        else:
            fds.extend(got)
    return fds


def kind_matches(fd: int, kind: Kind) -> bool:
    """Whether fd is what kind says (RCV-8); RAW matches anything."""
    if kind == Kind.RAW:
        return True
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return kind == Kind.FILE
        if kind == Kind.FILE:
            return False
        if socket.getdefaulttimeout() is not None:
            # socket(fileno=) would make the shared description non-blocking
            # (TRN-9); without getsockopt on a bare fd we cannot look closer.
            return True
        s = socket.socket(fileno=fd)
        try:
            stype = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
            listening = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
        finally:
            s.detach()
    except OSError:
        return False
    if stype in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
        return kind == (Kind.LISTENER if listening else Kind.STREAM)
    if stype == socket.SOCK_DGRAM:
        return kind == Kind.PACKET
    return False


# ---------------------------------------------------------------------------
# A connection: frames in and out, and the descriptor queue of section 4.3.


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _fail("TIMEOUT", "deadline passed")
    return left


class Conn:
    """One end of a protocol connection.

    It owns the socket and every descriptor received on it and not yet taken
    with take_fds; close() closes them all.
    """

    ancbufsize = ANCBUFSIZE
    recv_size = 65536

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = bytearray()
        self._fds: collections.deque[int] = collections.deque()
        self._mid_frame = False  # a frame write stopped half-way: no more frames

    @property
    def pending_fds(self) -> int:
        return len(self._fds)

    def take_fds(self, n: int) -> list[int]:
        """The first n descriptors of the queue (RCV-1)."""
        if len(self._fds) < n:
            raise _fail("MALFORMED", f"BATCH declares {n} descriptors, {len(self._fds)} arrived")
        return [self._fds.popleft() for _ in range(n)]

    def drop_fds(self) -> int:
        n = len(self._fds)
        close_fds(self._fds)
        self._fds.clear()
        return n

    def read_frame(self, timeout: float, *, eof_ok: bool = False) -> Frame | None:
        """The next frame, read within timeout seconds.

        None when the peer closed cleanly before its first byte and eof_ok;
        otherwise end of stream is PEER_CLOSED.
        """
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= HEADER.size:
                ftype, flags, nfds, length = HEADER.unpack_from(self._buf)
                check_header(ftype, flags, nfds, length)
                end = HEADER.size + length
                if len(self._buf) >= end:
                    payload = bytes(self._buf[HEADER.size:end])
                    del self._buf[:end]
                    return Frame(ftype, nfds, payload)
            # Every complete frame read so far has been handed out (RCV-3).
            if len(self._fds) > MAX_FDS_PER_BATCH:
                raise _fail("MALFORMED", f"{len(self._fds)} descriptors arrived that no frame accounts for")
            if not self._recv(deadline):
                if not self._buf and eof_ok:
                    return None
                where = "inside a frame" if self._buf else "mid-session"
                raise _fail("PEER_CLOSED", f"connection closed {where}")

    def _recv(self, deadline: float) -> int:
        """One recvmsg: append its bytes and descriptors; 0 at end of stream."""
        self.sock.settimeout(_remaining(deadline))
        try:
            data, ancdata, msg_flags, _ = self.sock.recvmsg(self.recv_size, self.ancbufsize, _CLOEXEC_FLAG)
        except TimeoutError:
            raise _fail("TIMEOUT", "no data from the peer before the deadline") from None
        except ConnectionResetError:
            return 0
        fds = fds_from_ancdata(ancdata)
        if not _CLOEXEC_FLAG:
            for fd in fds:
                os.set_inheritable(fd, False)
        if msg_flags & socket.MSG_CTRUNC:  # TRN-5
            close_fds(fds)
            raise _fail("TRUNCATED", f"control data truncated (MSG_CTRUNC), {len(fds)} descriptors closed")
        self._fds.extend(fds)
        self._buf += data
        return len(data)

    def write(self, data: bytes, timeout: float, fds: list[int] | None = None) -> None:
        """Write data within timeout seconds, fds attached to its first byte (TRN-3)."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        sent_any = False
        try:
            while view:
                self.sock.settimeout(_remaining(deadline))
                if fds and not sent_any:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    n = self.sock.sendmsg([view], rights, socket.MSG_NOSIGNAL)
                else:
                    n = self.sock.send(view, socket.MSG_NOSIGNAL)
                sent_any = sent_any or n > 0
                view = view[n:]
        except TimeoutError:
            self._mid_frame = sent_any
            raise _fail("TIMEOUT", "the peer did not take our data before the deadline") from None
        except GracefulError:
            self._mid_frame = sent_any
            raise
        except (BrokenPipeError, ConnectionResetError):
            self._mid_frame = True
            raise _fail("PEER_CLOSED", "connection closed by the peer") from None
        except OSError as e:
            self._mid_frame = sent_any
            if fds and not sent_any:
                raise _fail("SENDER_FAILED", f"sendmsg of {len(fds)} descriptors: {e}") from None
            raise _fail("OTHER", f"send: {e}") from None

    def send_error(self, code: str, message: str, timeout: float) -> None:
        """Best effort: tell the peer why the session failed (ERR-1)."""
        if self._mid_frame or code not in Code.__members__ or code == "PEER_CLOSED":
            return
        try:
            self.write(encode_error(Code[code], message), timeout)
        except GracefulError:
            pass

    def close(self) -> None:
        self.drop_fds()
        try:
            self.sock.close()
        except OSError:
            pass


def _fail_session(conn: Conn, err: GracefulError, timeout: float) -> None:
    """ERR-1: send the matching ERROR if we found the fault, and close everything."""
    if not err.remote:
        conn.send_error(err.code, err.message, timeout)
    conn.close()


# ---------------------------------------------------------------------------
# Receiver.


def connect(path: str, timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """A unix stream connection to path, within timeout seconds (TRN-8)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except TimeoutError:
        sock.close()
        raise _fail("TIMEOUT", f"connect {path}: deadline passed") from None
    except OSError as e:
        sock.close()
        raise _fail("OTHER", f"connect {path}: {e}") from None
    return sock


Handler = Callable[[Descriptor], None]


def receive_session(conn: Conn, handler: Handler, timeout: float = DEFAULT_TIMEOUT,
                    check_kinds: bool = True) -> int:
    """Run one receiver session on conn: HELLO ... END, hand over, ACK.

    handler is called once per descriptor, in record order, only after the
    whole set has arrived and been verified; it owns the descriptor from the
    call on, even if it raises. Raising refuses the set: the remaining
    descriptors are closed and the peer gets ERROR REJECTED. Returns the
    session's count. On failure the connection is closed and GracefulError
    raised, with every descriptor not handed over closed.
    """
    try:
        received = _receive_set(conn, timeout, check_kinds)
        for i, d in enumerate(received):
            try:
                handler(d)
            except Exception as e:  # the user refused: ACK-1
                close_fds(x.fd for x in received[i + 1:])
                raise _fail("REJECTED", f"descriptor {i} refused: {e}") from e
        conn.write(encode_count(FrameType.ACK, len(received)), timeout)
        return len(received)
    except GracefulError as err:
        _fail_session(conn, err, timeout)
        raise
    except Exception as e:  # ERR-2: a bug of ours still closes everything
        err = _fail("OTHER", f"receiver failed: {e!r}")
        _fail_session(conn, err, timeout)
        raise err from e


def _receive_set(conn: Conn, timeout: float, check_kinds: bool) -> list[Descriptor]:
    conn.write(encode_hello(), timeout)
    frame = conn.read_frame(timeout)
    if frame.type == FrameType.ERROR:
        raise decode_error(frame.payload)
    if frame.type != FrameType.WELCOME:
        raise _fail("MALFORMED", f"{FrameType(frame.type).name} where WELCOME was expected")
    (version,) = U16.unpack(frame.payload)
    if version != VERSION:
        raise _fail("UNSUPPORTED_VERSION", f"WELCOME names version {version}, we sent {VERSION}..{VERSION}")
    received: list[Descriptor] = []
    try:
        while True:
            frame = conn.read_frame(timeout)
            if frame.type == FrameType.BATCH:
                records = decode_records(frame.payload, frame.nfds)
                fds = conn.take_fds(frame.nfds)
                received += [Descriptor(fd, kind, meta) for fd, (kind, meta) in zip(fds, records)]
                if len(received) > MAX_COUNT:
                    raise _fail("MALFORMED", "more than 2^32-1 descriptors in one session")
                if check_kinds:
                    first = len(received) - len(fds)
                    for i, d in enumerate(received[first:], first):
                        if not kind_matches(d.fd, d.kind):
                            raise _fail("MALFORMED", f"descriptor {i} is not a {d.kind.name}")
            elif frame.type == FrameType.END:
                (count,) = U32.unpack(frame.payload)
                if count != len(received):
                    raise _fail("MALFORMED", f"END counts {count} descriptors, BATCH frames carried {len(received)}")
                if conn.pending_fds:
                    raise _fail("MALFORMED", f"{conn.pending_fds} descriptors arrived beyond the BATCH frames")
                return received
            elif frame.type == FrameType.ERROR:
                raise decode_error(frame.payload)
            else:
                raise _fail("MALFORMED", f"{FrameType(frame.type).name} where BATCH or END was expected")
    except BaseException:
        close_fds(d.fd for d in received)
        raise


def receive(path: str, handler: Handler, *, timeout: float = DEFAULT_TIMEOUT,
            ready: bool = True, check_kinds: bool = True) -> int:
    """Connect to a sender at path, run one session, send READY if ready, close."""
    conn = Conn(connect(path, timeout))
    try:
        count = receive_session(conn, handler, timeout, check_kinds)
        if ready:
            send_ready(conn, timeout)
        return count
    finally:
        conn.close()


def send_ready(conn: Conn, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Tell the sender that we serve with its descriptors (RDY-1).

    A sender that has already gone (it need not wait for READY) is no failure:
    the set was acknowledged and is ours.
    """
    try:
        conn.write(encode_frame(FrameType.READY), timeout)
    except GracefulError as e:
        if e.code != "PEER_CLOSED":
            raise


# ---------------------------------------------------------------------------
# Sender.

READY = "ready"
ACKED = "acked"


@dataclasses.dataclass
class Result:
    """How one accepted connection ended: outcome READY or ACKED, or error."""

    outcome: str | None = None
    error: GracefulError | None = None


def check_set(descriptors: list[Descriptor]) -> None:
    """Refuse a set the protocol cannot carry, before anything is sent (SND-5)."""
    if len(descriptors) > MAX_COUNT:
        raise _fail("TOO_LARGE", f"{len(descriptors)} descriptors, over {MAX_COUNT}")
    for i, d in enumerate(descriptors):
        if d.meta is not None and len(d.meta) > MAX_META:
            raise _fail("TOO_LARGE", f"descriptor {i} has {len(d.meta)} bytes of metadata, over {MAX_META}")
        if d.kind not in Kind._value2member_map_:
            raise _fail("OTHER", f"descriptor {i} has unknown kind {d.kind}")


def _read_from_receiver(conn: Conn, timeout: float, eof_ok: bool = False) -> Frame | None:
    frame = conn.read_frame(timeout, eof_ok=eof_ok)
    if conn.pending_fds:
        n = conn.drop_fds()
        raise _fail("MALFORMED", f"the receiver sent us {n} descriptors")
    return frame


def send_session(conn: Conn, hello: Frame, descriptors: list[Descriptor], *,
                 timeout: float = DEFAULT_TIMEOUT, ready_timeout: float = DEFAULT_READY_TIMEOUT,
                 busy: threading.Lock | None = None) -> tuple[str, Frame | None]:
    """Answer hello with the set: WELCOME, BATCH..., END, then wait for ACK and READY.

    Returns the outcome (READY or ACKED) and, when the receiver began a new
    session instead of saying READY, its HELLO. Raises GracefulError (after
    sending the matching ERROR) on failure; the caller closes the connection.
    busy, when given, is held for the session; if another session holds it
    the peer gets ERROR BUSY (AUTH-4).
    """
    if hello.type == FrameType.ERROR:
        raise decode_error(hello.payload)
    if hello.type != FrameType.HELLO:
        raise _fail("MALFORMED", f"{FrameType(hello.type).name} where HELLO was expected")
    magic, lo, hi = HELLO_PAYLOAD.unpack(hello.payload)
    if magic != MAGIC:
        raise _fail("MALFORMED", f"HELLO magic {magic!r}, want {MAGIC!r}")
    if lo > hi or not lo <= VERSION <= hi:
        raise _fail("UNSUPPORTED_VERSION", f"receiver speaks {lo}..{hi}, this sender speaks {VERSION}..{VERSION}")
    if busy is not None and not busy.acquire(blocking=False):
        raise _fail("BUSY", "another receiver is taking the set")
    try:
        conn.write(encode_welcome(VERSION), timeout)
        for batch in plan_batches(descriptors):
            conn.write(encode_batch(batch), timeout, [d.fd for d in batch])
        conn.write(encode_count(FrameType.END, len(descriptors)), timeout)

        frame = _read_from_receiver(conn, timeout)
        if frame.type == FrameType.ERROR:
            raise decode_error(frame.payload)
        if frame.type != FrameType.ACK:
            raise _fail("MALFORMED", f"{FrameType(frame.type).name} where ACK was expected")
        (count,) = U32.unpack(frame.payload)
        if count != len(descriptors):
            raise _fail("MALFORMED", f"ACK counts {count} descriptors, we sent {len(descriptors)}")

        try:
            frame = _read_from_receiver(conn, ready_timeout, eof_ok=True)
        except GracefulError as e:
            if e.code != "TIMEOUT":
                raise
            return ACKED, None  # RDY-3: the wait is bounded; not ready
        if frame is None:
            return ACKED, None  # closed after ACK: received, not ready (RDY-2)
        if frame.type == FrameType.READY:
            return READY, None
        if frame.type == FrameType.HELLO:
            return ACKED, frame  # a new session without READY
        if frame.type == FrameType.ERROR:
            raise decode_error(frame.payload)
        raise _fail("MALFORMED", f"{FrameType(frame.type).name} where READY was expected")
    finally:
        if busy is not None:
            busy.release()


def peer_uid(sock: socket.socket) -> int:
    """The effective uid of the connection's peer, from SO_PEERCRED."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def same_user(uid: int) -> bool:
    """The default policy of AUTH-1: the peer runs as our effective uid."""
    return uid == os.geteuid()


def listen_unix(path: str, backlog: int = 16) -> socket.socket:
    """A listening unix socket at path whose file is mode 0600 from its birth (AUTH-3).

    It is bound inside a fresh 0700 directory beside path, made 0600, then
    renamed into place, so it is never reachable with wider permissions.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        private = tempfile.mkdtemp(prefix=".gf", dir=os.path.dirname(path) or ".")
        try:
            tmp = os.path.join(private, "s")
            if len(os.fsencode(tmp)) > 107:
                raise _fail("OTHER", f"socket path {path!r} is too long to bind privately")
            sock.bind(tmp)
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            os.rmdir(private)
        sock.listen(backlog)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


class Server:
    """Hands a fixed set of descriptors to every receiver that connects.

    timeout bounds each blocking step (default 10 s), ready_timeout the wait
    for READY after ACK (default 30 s). authorize(uid) decides whether a peer
    may take the set (default: same effective uid, AUTH-1). done(Result) is
    called once per accepted connection when it ends. The caller keeps owning
    the descriptors: the server never closes them or changes their flags.
    """

    def __init__(self, descriptors: list[Descriptor], *, timeout: float = DEFAULT_TIMEOUT,
                 ready_timeout: float = DEFAULT_READY_TIMEOUT,
                 authorize: Callable[[int], bool] | None = None,
                 done: Callable[[Result], None] | None = None):
        check_set(descriptors)
        self.descriptors = list(descriptors)
        self.timeout = timeout
        self.ready_timeout = ready_timeout
        self.authorize = authorize or same_user
        self.done = done or (lambda result: None)
        self._busy = threading.Lock()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._path: str | None = None
        self._path_ino: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False

    def listen(self, path: str) -> None:
        self._listener = listen_unix(path)
        self._path = path
        self._path_ino = os.stat(path).st_ino

    def start(self) -> None:
        """Accept connections in a background thread until close()."""
        t = threading.Thread(target=self._accept_loop, name="graceful-accept", daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        poller = select.poll()
        poller.register(self._listener.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if self._wake_r in events:
                return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    select.select([self._wake_r], [], [], 0.1)  # back off instead of spinning
                    continue
                return
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._conns.add(sock)
                t = threading.Thread(target=self._serve_conn, args=(sock,), name="graceful-conn", daemon=True)
                self._threads.append(t)
            t.start()

    def _serve_conn(self, sock: socket.socket) -> None:
        conn = Conn(sock)
        result = Result()
        try:
            result.outcome = self.serve_conn(conn)
        except GracefulError as err:
            result.error = err
        finally:
            conn.close()
            with self._lock:
                self._conns.discard(sock)
            self.done(result)

    def serve_conn(self, conn: Conn) -> str:
        """Serve sessions on one connection until the receiver stops; the last outcome."""
        try:
            if not self.authorize(peer_uid(conn.sock)):
                return self._refuse(conn)
            frame = _read_from_receiver(conn, self.timeout, eof_ok=True)
            if frame is None:
                raise _fail("PEER_CLOSED", "connection closed before HELLO")
            while True:
                outcome, frame = send_session(conn, frame, self.descriptors, timeout=self.timeout,
                                              ready_timeout=self.ready_timeout, busy=self._busy)
                if frame is None and outcome == READY:
                    try:  # a session boundary: another session may follow
                        frame = _read_from_receiver(conn, self.timeout, eof_ok=True)
                    except GracefulError as e:
                        if e.code != "TIMEOUT":
                            raise
                if frame is None:
                    return outcome
        except GracefulError as err:
            _fail_session(conn, err, self.timeout)
            raise
        except Exception as e:  # ERR-2: a bug of ours still closes everything
            err = _fail("OTHER", f"sender failed: {e!r}")
            _fail_session(conn, err, self.timeout)
            raise err from e

    def _refuse(self, conn: Conn) -> str:
        """AUTH-1: ERROR UNAUTHORIZED, and nothing else, to a peer of another user.

        The error goes out at once; then the peer's HELLO, if it comes, is
        read so that closing does not reset the connection under it.
        """
        conn.send_error("UNAUTHORIZED", "peer uid may not take these descriptors", self.timeout)
        try:
            conn.read_frame(self.timeout, eof_ok=True)
        except GracefulError:
            pass
        conn.drop_fds()
        err = _fail("UNAUTHORIZED", f"refused peer uid {peer_uid(conn.sock)}")
        err.remote = True  # already sent: do not send it twice
        raise err

    def close(self) -> None:
        """Stop accepting, end every connection, remove the socket file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._conns)
        os.write(self._wake_w, b"x")
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # our own connection, not a handed-over socket
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=self.timeout + 1)
        if self._listener is not None:
            self._listener.close()
            try:
                if os.stat(self._path).st_ino == self._path_ino:
                    os.unlink(self._path)
            except OSError:
                pass
        os.close(self._wake_r)
        os.close(self._wake_w)
