"""pygraceful: the graceful descriptor hand-off protocol, version 1 (revision 1.1), in Python.

An independent implementation of spec/protocol.md using only the Python 3.11
standard library, written from the specification alone. Both roles:

Receiver (the new process)::

    def take(d):                 # d is a Descriptor: fd, kind, meta
        keep.append(d)           # the callback owns d.fd from now on
    pygraceful.receive("/run/app.sock", take)          # HELLO ... ACK, READY

Sender (the old process)::

    server = pygraceful.Server([pygraceful.Descriptor(ln.fileno(), Kind.LISTENER, b"http")])
    server.listen("/run/app.sock")                      # mode 0600 from birth
    server.start()                                      # one thread for every waiting connection
    ...
    server.close()

Every blocking step has a deadline, every session too; every descriptor
received is handed to the user or closed; each side checks the other's
credentials (same effective uid by default) before anything else; a failure
raises GracefulError whose code is the protocol's error name (section 8),
"TIMEOUT", "UNCONFIRMED" or "OTHER".
"""

from __future__ import annotations

import array
import collections
import dataclasses
import enum
import errno
import os
import selectors
import socket
import stat
import struct
import tempfile
import threading
import time
import typing
from typing import Callable, Iterable

VERSION = 1
MAGIC = b"GRACEFUL"
MAX_FDS_PER_BATCH = 252
MAX_META = 65536
MAX_PAYLOAD = 1 << 20
MAX_ERROR_MESSAGE = 1024
MAX_COUNT = 2**32 - 1
DEFAULT_TIMEOUT = 10.0
DEFAULT_READY_TIMEOUT = 10.0  # RDY-4: no longer than the step deadline
DEFAULT_MAX_PENDING = 64  # LIM-3
DEFAULT_MAX_FDS = 16384  # LIM-2
DEFAULT_MAX_META = 16 << 20  # LIM-2
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
# Linux's SCM_PIDFD (SO_PASSPIDFD) and SO_PASSRIGHTS (6.16 and later), which
# Python 3.11 does not name.
SCM_PIDFD = getattr(socket, "SCM_PIDFD", 0x04)
SO_PASSRIGHTS = getattr(socket, "SO_PASSRIGHTS", 83)
_CLOEXEC_FLAG = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class GracefulError(Exception):
    """A failed session.

    code is a protocol error name ("MALFORMED", ... see Code), "TIMEOUT" when
    a deadline passed, "UNCONFIRMED" when every descriptor of the set was
    handed to the user but the sender may not have heard the ACK (ACK-3: the
    set is the user's), or "OTHER". remote is True when the peer reported
    the failure in an ERROR frame (then code is the peer's code).
    """

    def __init__(self, code: str, message: str, *, remote: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.remote = remote
        # told: the peer already has its ERROR (a refusal written at once).
        self.told = False


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


def check_header(ftype: int, flags: int, nfds: int, length: int,
                 allowed: Iterable[int] | None = None) -> None:
    """Judge a frame header before its payload is read (FRM-4, FRM-6).

    The fields are checked in FRM-4's order, the first rule broken decides:
    flags, type (known, and one of allowed: what may come at this point of
    the session), nfds, length (over 1 MiB: TOO_LARGE; not what the type
    requires: MALFORMED). An ERROR frame that breaks a rule is still the
    end of the session, never answered (ERR-3): the error is remote.
    """
    try:
        if flags != 0:
            raise _fail("MALFORMED", f"frame type {ftype} has flags {flags:#x}, want 0")
        if ftype not in FrameType._value2member_map_:
            raise _fail("MALFORMED", f"unknown frame type {ftype}")
        name = FrameType(ftype).name
        if allowed is not None and ftype not in allowed:
            want = "/".join(FrameType(t).name for t in allowed)
            raise _fail("MALFORMED", f"{name} where {want} is due")
        if ftype == FrameType.BATCH:
            if not 1 <= nfds <= MAX_FDS_PER_BATCH:
                raise _fail("MALFORMED", f"BATCH declares {nfds} descriptors, want 1..{MAX_FDS_PER_BATCH}")
        elif nfds != 0:
            raise _fail("MALFORMED", f"{name} declares {nfds} descriptors, want 0")
        if length > MAX_PAYLOAD:
            raise _fail("TOO_LARGE", f"frame of {length} bytes, limit {MAX_PAYLOAD}")
        want = _FIXED_LENGTH.get(ftype)
        if want is not None and length != want:
            raise _fail("MALFORMED", f"{name} payload is {length} bytes, want {want}")
        if ftype == FrameType.BATCH and length < nfds * RECORD.size:
            raise _fail("MALFORMED", f"BATCH of {nfds} records in {length} bytes")
        if ftype == FrameType.ERROR and not ERROR_HEAD.size <= length <= ERROR_HEAD.size + MAX_ERROR_MESSAGE:
            raise _fail("MALFORMED", f"ERROR payload is {length} bytes, want 4..{4 + MAX_ERROR_MESSAGE}")
    except GracefulError as err:
        if ftype == FrameType.ERROR:
            err.remote = True  # a broken ERROR is an ERROR all the same
        raise


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
        # Still the end of the session, and never answered (ERR-3).
        return GracefulError("MALFORMED", f"ERROR message_length {message_length} does not match its "
                                          f"{len(payload)}-byte payload", remote=True)
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


def _abstract(path: str) -> str:
    """A socket address: "@name" is the Linux abstract address "name"."""
    return "\0" + path[1:] if path.startswith("@") else path


# ---------------------------------------------------------------------------
# Credentials (section 9).


class PeerCred(typing.NamedTuple):
    """What the kernel recorded of the peer when the connection was made."""

    pid: int
    uid: int
    gid: int


def peer_cred(sock: socket.socket) -> PeerCred:
    """The peer's credentials (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return PeerCred(*struct.unpack("3i", creds))


def _overflow_id(kind: str) -> int:
    try:
        with open(f"/proc/sys/kernel/overflow{kind}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65534


OVERFLOW_UID = _overflow_id("uid")
OVERFLOW_GID = _overflow_id("gid")

Authorize = Callable[[PeerCred], bool]


def check_peer(cred: PeerCred, authorize: Authorize | None) -> None:
    """Refuse a peer the policy does not admit (AUTH-1, AUTH-5, AUTH-7).

    The overflow ids, which stand for a peer the kernel could not map into
    our user namespace, never pass; then authorize decides, by default the
    same effective uid as ours.
    """
    if cred.uid == OVERFLOW_UID or cred.gid == OVERFLOW_GID:
        raise _fail("UNAUTHORIZED", f"peer {cred} is the overflow user or group")
    if authorize is None:
        if cred.uid != os.geteuid():
            raise _fail("UNAUTHORIZED", f"peer uid {cred.uid}, this process runs as {os.geteuid()}")
    elif not authorize(cred):
        raise _fail("UNAUTHORIZED", f"peer {cred} is not admitted")


def _refuse_rights(sock: socket.socket) -> None:
    """SND-9: have the kernel refuse descriptors pushed at us, where it can."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_PASSRIGHTS, 0)
    except OSError:
        pass  # before Linux 6.16: reads without a control buffer discard them


# ---------------------------------------------------------------------------
# A connection: frames in and out, and the descriptor queue of section 4.3.


class Conn:
    """One end of a protocol connection.

    It owns the socket and every descriptor received on it and not yet taken
    with take_fds; close() closes them all. A sender's Conn reads with no
    room for control data: descriptors pushed at it are never installed
    (SND-9). session_end, when set, bounds every step (LIM-1).
    """

    ancbufsize = ANCBUFSIZE
    recv_size = 65536

    def __init__(self, sock: socket.socket, *, receiver: bool = True):
        self.sock = sock
        self.receiver = receiver
        self.session_end: float | None = None
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

    def _deadline(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        if self.session_end is not None and self.session_end < deadline:
            return self.session_end
        return deadline

    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Bytes read elsewhere (the Server's loop), to be framed here."""
        self._buf += data

    def next_frame(self, allowed: Iterable[int] | None = None,
                   judge: Callable[[int, int, int], None] | None = None) -> Frame | None:
        """The next complete frame of what was read, or None; the header is
        judged as soon as it is in (FRM-6)."""
        if len(self._buf) < HEADER.size:
            return None
        ftype, flags, nfds, length = HEADER.unpack_from(self._buf)
        check_header(ftype, flags, nfds, length, allowed)
        if judge is not None:
            judge(ftype, nfds, length)
        end = HEADER.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER.size:end])
        del self._buf[:end]
        return Frame(ftype, nfds, payload)

    def read_frame(self, timeout: float, *, eof_ok: bool = False, allowed: Iterable[int] | None = None,
                   judge: Callable[[int, int, int], None] | None = None) -> Frame | None:
        """The next frame, read within timeout seconds (and the session's deadline).

        None when the peer closed cleanly before its first byte and eof_ok;
        otherwise end of stream is PEER_CLOSED.
        """
        deadline = self._deadline(timeout)
        while True:
            frame = self.next_frame(allowed, judge)
            if frame is not None:
                return frame
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
        try:
            self.sock.settimeout(_remaining(deadline))
        except GracefulError:
            if self.session_end is not None and deadline >= self.session_end:
                raise _fail("TIMEOUT", "session deadline passed") from None
            raise
        ancbufsize = self.ancbufsize if self.receiver else 0
        try:
            data, ancdata, msg_flags, _ = self.sock.recvmsg(self.recv_size, ancbufsize, _CLOEXEC_FLAG)
        except TimeoutError:
            raise _fail("TIMEOUT", "no data from the peer before the deadline") from None
        except ConnectionResetError:
            return 0
        if not self.receiver:
            if msg_flags & socket.MSG_CTRUNC:
                # The kernel discarded descriptors a receiver pushed at us.
                raise _fail("MALFORMED", "the receiver sent descriptors")
            self._buf += data
            return len(data)
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
        """Write a frame within one deadline, fds attached to its first byte (TRN-3, TRN-8)."""
        deadline = self._deadline(timeout)
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
    """ERR-1: send the matching ERROR if we found the fault, and close everything.

    No ERROR answers an ERROR (ERR-3), and none is sent for a deadline
    (TRN-8: TIMEOUT is no protocol code).
    """
    if not err.remote and not err.told:
        conn.session_end = None  # the ERROR gets its own step
        conn.send_error(err.code, err.message, timeout)
    conn.close()


# ---------------------------------------------------------------------------
# A spare (graceful-supervisor -spare; not part of the wire protocol).

SPARE_ENV = "GRACEFUL_SPARE_FD"
_turn: list[GracefulError | None] = []  # the first await_turn's outcome


def await_turn() -> None:
    """In a process a supervisor started as a spare, wait for its turn.

    GRACEFUL_SPARE_FD names a unix socket whose peer is this process's
    parent, as this user: write b"W", then block without a deadline until
    the supervisor writes b"G" (return) or closes it (GracefulError
    "OTHER", "spare dismissed": exit). Anything else about the variable is
    an error at once. Only the first call waits; the variable is removed
    and the descriptor closed, so that children inherit neither. receive()
    calls it.
    """
    if not _turn:
        try:
            _wait_for_turn()
            _turn.append(None)
        except GracefulError as e:
            _turn.append(e)
    if _turn[0] is not None:
        raise _turn[0]


def _wait_for_turn() -> None:
    value = os.environ.pop(SPARE_ENV, None)
    if value is None:
        return
    if not value.isdigit():
        raise _fail("OTHER", f"{SPARE_ENV}={value!r}: not a descriptor")
    fd = int(value)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise _fail("OTHER", f"{SPARE_ENV}={fd}: not a socket: {e}") from None
    try:
        if sock.family != socket.AF_UNIX:
            raise _fail("OTHER", f"{SPARE_ENV}={fd}: not a unix socket")
        cred = peer_cred(sock)
        if cred.uid != os.geteuid() or cred.pid != os.getppid():
            raise _fail("OTHER", f"{SPARE_ENV}={fd}: its peer (pid {cred.pid}, uid {cred.uid}) "
                        f"is not this process's parent (pid {os.getppid()}) as this user")
    except GracefulError:
        sock.detach()  # not the spare's: left as it was
        raise
    with sock:
        sock.set_inheritable(False)
        sock.setblocking(True)
        try:
            # The supervisor may have said b"G" and closed its end before
            # this process got here: the write fails, the b"G" is read.
            sock.sendall(b"W")
        except OSError:
            pass
        try:
            got = sock.recv(1)
        except OSError as e:
            raise _fail("OTHER", f"spare dismissed before its turn came: {e}") from None
        if got != b"G":
            raise _fail("OTHER", "spare dismissed before its turn came")


# ---------------------------------------------------------------------------
# Receiver.


def connect(path: str, timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    """A unix stream connection to path ("@name": abstract), within timeout seconds (TRN-8)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(_abstract(path))
    except TimeoutError:
        sock.close()
        raise _fail("TIMEOUT", f"connect {path}: deadline passed") from None
    except OSError as e:
        sock.close()
        raise _fail("OTHER", f"connect {path}: {e}") from None
    return sock


Handler = Callable[[Descriptor], None]


@dataclasses.dataclass
class Limits:
    """A receiver's bounds on one set (LIM-2)."""

    max_fds: int = DEFAULT_MAX_FDS
    max_meta: int = DEFAULT_MAX_META


def receive_session(conn: Conn, handler: Handler, timeout: float = DEFAULT_TIMEOUT,
                    check_kinds: bool = True, limits: Limits | None = None) -> int:
    """Run one receiver session on conn: HELLO ... END, hand over, ACK.

    handler is called once per descriptor, in record order, only after the
    whole set has arrived and been verified; it owns the descriptor from the
    call on, even if it raises. Raising refuses the set: the remaining
    descriptors are closed and the peer gets ERROR REJECTED. Returns the
    session's count. On failure the connection is closed and GracefulError
    raised, with every descriptor not handed over closed. Once every
    descriptor was handed over, a failure to write ACK is UNCONFIRMED (the
    connection is closed; the set is the user's).
    """
    try:
        received = _receive_set(conn, timeout, check_kinds, limits or Limits())
        for i, d in enumerate(received):
            try:
                handler(d)
            except Exception as e:  # the user refused: ACK-1
                close_fds(x.fd for x in received[i + 1:])
                raise _fail("REJECTED", f"descriptor {i} refused: {e}") from e
        try:
            conn.write(encode_count(FrameType.ACK, len(received)), timeout)
        except GracefulError as e:
            conn.close()
            raise GracefulError("UNCONFIRMED", f"every descriptor was handed over; ACK not written: {e.message}") from e
        return len(received)
    except GracefulError as err:
        if err.code != "UNCONFIRMED":
            _fail_session(conn, err, timeout)
        raise
    except Exception as e:  # ERR-2: a bug of ours still closes everything
        err = _fail("OTHER", f"receiver failed: {e!r}")
        _fail_session(conn, err, timeout)
        raise err from e


def _receive_set(conn: Conn, timeout: float, check_kinds: bool, limits: Limits) -> list[Descriptor]:
    try:
        conn.write(encode_hello(), timeout)
    except GracefulError as e:
        # AUTH-9: a sender that refused us and closed may have written why:
        # it is still there to read.
        if e.code != "PEER_CLOSED":
            raise
    frame = conn.read_frame(timeout, allowed=(FrameType.WELCOME, FrameType.ERROR))
    if frame.type == FrameType.ERROR:
        raise decode_error(frame.payload)
    (version,) = U16.unpack(frame.payload)
    if version != VERSION:
        raise _fail("UNSUPPORTED_VERSION", f"WELCOME names version {version}, we sent {VERSION}..{VERSION}")
    received: list[Descriptor] = []
    meta = 0

    def judge(ftype: int, nfds: int, length: int) -> None:
        # LIM-2, decided from the header of the BATCH that would cross it.
        if ftype != FrameType.BATCH:
            return
        if len(received) + nfds > limits.max_fds:
            raise _fail("TOO_LARGE", f"set of {len(received) + nfds} descriptors, limit {limits.max_fds}")
        if meta + length - nfds * RECORD.size > limits.max_meta:
            raise _fail("TOO_LARGE", f"set of {meta + length - nfds * RECORD.size} bytes of metadata, "
                                     f"limit {limits.max_meta}")

    try:
        while True:
            frame = conn.read_frame(timeout, allowed=(FrameType.BATCH, FrameType.END, FrameType.ERROR), judge=judge)
            if frame.type == FrameType.BATCH:
                fds = conn.take_fds(frame.nfds)
                try:
                    records = decode_records(frame.payload, frame.nfds)
                except GracefulError:
                    close_fds(fds)
                    raise
                received += [Descriptor(fd, kind, m) for fd, (kind, m) in zip(fds, records)]
                meta += len(frame.payload) - frame.nfds * RECORD.size
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
            else:
                raise decode_error(frame.payload)
    except BaseException:
        close_fds(d.fd for d in received)
        raise


def _open_checked(path: str, timeout: float, authorize: Authorize | None) -> Conn:
    """A connection to the sender at path, whose credentials pass (AUTH-5)."""
    conn = Conn(connect(path, timeout))
    try:
        check_peer(peer_cred(conn.sock), authorize)
    except GracefulError as err:
        _fail_session(conn, err, timeout)  # ERROR UNAUTHORIZED, and close
        raise
    return conn


def receive(path: str, handler: Handler, *, timeout: float = DEFAULT_TIMEOUT,
            ready: bool = True, check_kinds: bool = True, sessions: int = 1,
            session_timeout: float | None = None, authorize: Authorize | None = None,
            limits: Limits | None = None) -> int:
    """Connect to a sender at path, run sessions (one by default), close.

    Each session sends READY after ACK when ready. The sender's credentials
    are checked before anything is written (AUTH-5: same effective uid by
    default, or authorize). A sender that answers BUSY is asked again on a
    new connection, with a short back-off, until the session deadline
    (AUTH-10). session_timeout bounds the whole, 3 * timeout by default
    (LIM-1). Returns the count of descriptors handed over. A spare waits
    for its turn first (await_turn).
    """
    await_turn()
    end = time.monotonic() + (session_timeout if session_timeout is not None else 3 * timeout)
    pause = 0.001
    while True:
        try:
            return _receive_once(path, handler, timeout, ready, check_kinds, sessions, end, authorize, limits)
        except GracefulError as e:
            if not (e.remote and e.code == "BUSY") or time.monotonic() + pause >= end:
                raise
        time.sleep(pause)  # a back-off, not a synchronisation
        pause = min(2 * pause, 0.1)


def _receive_once(path: str, handler: Handler, timeout: float, ready: bool, check_kinds: bool,
                  sessions: int, end: float, authorize: Authorize | None, limits: Limits | None) -> int:
    conn = _open_checked(path, timeout, authorize)
    conn.session_end = end
    try:
        total = 0
        for _ in range(max(sessions, 1)):
            total += receive_session(conn, handler, timeout, check_kinds, limits)
            if ready:
                send_ready(conn, timeout)
        return total
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
        if e.code not in ("PEER_CLOSED", "TIMEOUT"):
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


def judge_hello(hello: Frame) -> None:
    """Refuse a HELLO in NEG-6's order: magic (MALFORMED), then versions."""
    magic, lo, hi = HELLO_PAYLOAD.unpack(hello.payload)
    if magic != MAGIC:
        raise _fail("MALFORMED", f"HELLO magic {magic!r}, want {MAGIC!r}")
    if lo > hi or not lo <= VERSION <= hi:
        raise _fail("UNSUPPORTED_VERSION", f"receiver speaks {lo}..{hi}, this sender speaks {VERSION}..{VERSION}")


def send_session(conn: Conn, hello: Frame, descriptors: list[Descriptor], *,
                 timeout: float = DEFAULT_TIMEOUT, ready_timeout: float = DEFAULT_READY_TIMEOUT,
                 session_timeout: float | None = None,
                 busy: threading.Lock | None = None, claimed: bool = False) -> tuple[str, Frame | None]:
    """Answer hello with the set: WELCOME, BATCH..., END, then wait for ACK and READY.

    Returns the outcome (READY or ACKED) and, when the receiver began a new
    session where READY was awaited, its HELLO (RDY-2). Raises GracefulError
    (the caller sends the matching ERROR and closes the connection) on
    failure. busy, when given, is held for the session (AUTH-4) unless
    claimed says the caller holds it already; if another session holds it
    the peer gets ERROR BUSY. The session deadline bounds every step.
    """
    if conn.session_end is None:
        conn.session_end = time.monotonic() + (session_timeout if session_timeout is not None else 3 * timeout)
    judge_hello(hello)
    if busy is not None and not claimed and not busy.acquire(blocking=False):
        raise _fail("BUSY", "another receiver is taking the set")
    try:
        conn.write(encode_welcome(VERSION), timeout)
        for batch in plan_batches(descriptors):
            conn.write(encode_batch(batch), timeout, [d.fd for d in batch])
        conn.write(encode_count(FrameType.END, len(descriptors)), timeout)

        frame = conn.read_frame(timeout, allowed=(FrameType.ACK, FrameType.ERROR))
        if frame.type == FrameType.ERROR:
            raise decode_error(frame.payload)
        (count,) = U32.unpack(frame.payload)
        if count != len(descriptors):
            raise _fail("MALFORMED", f"ACK counts {count} descriptors, we sent {len(descriptors)}")

        try:
            frame = conn.read_frame(ready_timeout, eof_ok=True,
                                    allowed=(FrameType.READY, FrameType.HELLO, FrameType.ERROR))
        except GracefulError as e:
            # RDY-2, RDY-3: received, not ready; any other frame is
            # answered MALFORMED (never an ERROR: ERR-3) and the end.
            if not e.remote and e.code not in ("TIMEOUT", "PEER_CLOSED"):
                conn.session_end = None
                conn.send_error(e.code, e.message, timeout)
            e.acked = True
            raise
        if frame is None:
            return ACKED, None  # closed after ACK: received, not ready (RDY-2)
        if frame.type == FrameType.READY:
            return READY, None
        if frame.type == FrameType.HELLO:
            return ACKED, frame  # a new session where READY was awaited (RDY-2, RDY-5)
        err = decode_error(frame.payload)
        err.acked = True
        raise err
    finally:
        conn.session_end = None
        if busy is not None:
            busy.release()


def listen_unix(path: str, backlog: int = 64) -> socket.socket:
    """A listening unix socket at path, mode 0600 from its birth (AUTH-3).

    It is bound inside a fresh 0700 directory beside path, made 0600, then
    renamed into place, so it is never reachable with wider permissions. It
    replaces only a stale socket there (AUTH-11): anything else, a live
    socket included, is an error (EADDRINUSE). "@name" is the Linux
    abstract address "name": no file, no permissions, the credential check
    alone protects it (AUTH-8).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _refuse_rights(sock)  # accepted sockets inherit it (SND-9)
        if path.startswith("@"):
            sock.bind(_abstract(path))
            sock.listen(backlog)
        else:
            _vacate(path)
            private = tempfile.mkdtemp(prefix=".gf", dir=os.path.dirname(path) or ".")
            tmp = os.path.join(private, "s")
            try:
                if len(os.fsencode(tmp)) > 107:
                    raise _fail("OTHER", f"socket path {path!r} is too long to bind privately")
                sock.bind(tmp)
                os.chmod(tmp, 0o600)
                # Listening before it is in place: a socket at path that
                # refused connections would look stale, and be replaced.
                sock.listen(backlog)
                _vacate(path)  # again, just before the rename: as late as we can
                os.rename(tmp, path)
            finally:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                os.rmdir(private)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


def _vacate(path: str) -> None:
    """Remove a stale socket at path; refuse anything else (AUTH-11)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)  # stale: nobody listens
        except FileNotFoundError:
            pass  # its owner removed it as it closed: just as good
        return
    except OSError as e:
        raise OSError(errno.EADDRINUSE, f"{path}: {e}", path) from None
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a live server answers at {path}", path)


class _Pending:
    """A connection waiting for its HELLO, in the Server's loop."""

    def __init__(self, conn: Conn, deadline: float, last: str | None):
        self.conn = conn
        self.deadline = deadline
        self.last = last  # the outcome of its previous session, if any


class Server:
    """Hands a fixed set of descriptors to every receiver that connects.

    timeout bounds each blocking step (default 10 s), ready_timeout the wait
    for READY after ACK (default 10 s, RDY-4), session_timeout a whole
    session (default 3 * timeout, LIM-1). authorize(PeerCred) decides whether
    a peer may take the set (default: same effective uid; the overflow ids
    never, AUTH-7). done(Result) is called once per accepted connection when
    it ends. The caller keeps owning the descriptors: the server never
    closes them or changes their flags.

    One thread accepts every connection at once and waits for the HELLO of
    all of them (LIM-4): a connection costs its socket and a small buffer,
    no thread; at most max_pending (64) wait, the oldest is closed first
    (LIM-3). A peer is checked before any byte of it is read, and refused at
    once (AUTH-6). A session runs on a thread of its own; a HELLO that
    arrives meanwhile is answered BUSY at once (AUTH-4).
    """

    def __init__(self, descriptors: list[Descriptor], *, timeout: float = DEFAULT_TIMEOUT,
                 ready_timeout: float = DEFAULT_READY_TIMEOUT, session_timeout: float | None = None,
                 authorize: Authorize | None = None, max_pending: int = DEFAULT_MAX_PENDING,
                 done: Callable[[Result], None] | None = None):
        check_set(descriptors)
        self.descriptors = list(descriptors)
        self.timeout = timeout
        self.ready_timeout = ready_timeout
        self.session_timeout = session_timeout if session_timeout is not None else 3 * timeout
        self.authorize = authorize
        self.max_pending = max_pending
        self.done = done or (lambda result: None)
        self._busy = threading.Lock()
        self._lock = threading.Lock()
        self._active: set[Conn] = set()  # connections in a session thread
        self._returned: collections.deque[_Pending] = collections.deque()  # back from a session
        self._threads: list[threading.Thread] = []
        self._loop: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._path: str | None = None
        self._path_ino: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._closed = False

    def listen(self, path: str) -> None:
        self._listener = listen_unix(path)
        self._path = path
        if not path.startswith("@"):
            self._path_ino = os.stat(path).st_ino

    def start(self) -> None:
        """Serve in background threads until close()."""
        self._loop = threading.Thread(target=self._run, name="graceful-loop", daemon=True)
        self._loop.start()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- the loop: accept, check, wait for HELLO, refuse --------------------

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listener")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        pending: collections.OrderedDict[Conn, _Pending] = collections.OrderedDict()
        try:
            while not self._closed:
                now = time.monotonic()
                for p in [p for p in pending.values() if p.deadline <= now]:
                    self._drop(sel, pending, p, _fail("TIMEOUT", "no HELLO before the deadline"))
                wait = min((p.deadline for p in pending.values()), default=now + 3600) - now
                for key, _ in sel.select(max(wait, 0)):
                    if key.data == "listener":
                        self._accept(sel, pending)
                    elif key.data == "wake":
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        self._take_returned(sel, pending)
                    else:
                        self._readable(sel, pending, pending.get(key.data))
        finally:
            for p in list(pending.values()):
                self._drop(sel, pending, p, _fail("OTHER", "the server closed"))
            sel.close()

    def _accept(self, sel, pending) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError:
                # EMFILE and the like: back off rather than spin on a
                # listener that stays readable.
                time.sleep(0.05)
                return
            conn = Conn(sock, receiver=False)
            try:
                check_peer(peer_cred(sock), self.authorize)
            except GracefulError as err:
                self._refuse(conn, err)  # AUTH-6: at once, without reading
                continue
            self._add(sel, pending, _Pending(conn, time.monotonic() + self.timeout, None))

    def _add(self, sel, pending, p: _Pending) -> None:
        p.conn.sock.setblocking(False)
        p.conn.session_end = None
        pending[p.conn] = p
        sel.register(p.conn.sock, selectors.EVENT_READ, p.conn)
        while len(pending) > max(self.max_pending, 1):  # LIM-3: the oldest goes
            oldest = next(iter(pending.values()))
            self._drop(sel, pending, oldest, _fail("OTHER", "closed: too many connections wait for their HELLO"))

    def _take_returned(self, sel, pending) -> None:
        with self._lock:
            returned = list(self._returned)
            self._returned.clear()
        for p in returned:
            if self._closed:
                p.conn.close()
                self.done(Result(outcome=p.last))
                continue
            self._add(sel, pending, p)
            if p.conn.buffered():
                # The next HELLO came with READY, already read.
                self._judge(sel, pending, p)

    def _drop(self, sel, pending, p: _Pending, err: GracefulError | None) -> None:
        sel.unregister(p.conn.sock)
        del pending[p.conn]
        p.conn.close()  # no ERROR for a deadline (TRN-8)
        if p.last is not None:
            self.done(Result(outcome=p.last))  # an idle connection after READY: not a failure
        else:
            self.done(Result(error=err or _fail("PEER_CLOSED", "connection closed before HELLO")))

    def _refuse(self, conn: Conn, err: GracefulError) -> None:
        """One ERROR, written at once without blocking, then the close."""
        if err.code in Code.__members__ and err.code != "PEER_CLOSED" and not err.remote:
            try:
                conn.sock.send(encode_error(Code[err.code], err.message), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass
        conn.close()
        err.told = True
        self.done(Result(error=err))

    def _readable(self, sel, pending, p: _Pending | None) -> None:
        if p is None:
            return
        conn = p.conn
        try:
            data, _, flags, _ = conn.sock.recvmsg(max(1, HELLO_PAYLOAD.size + HEADER.size - conn.buffered()), 0)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, flags = b"", 0
        try:
            if flags & socket.MSG_CTRUNC:
                raise _fail("MALFORMED", "the receiver sent descriptors")
            if not data:
                if conn.buffered():
                    raise _fail("PEER_CLOSED", "connection closed inside HELLO")
                self._drop(sel, pending, p, None)
                return
            if p.last is None and not conn.buffered():
                conn.session_end = time.monotonic() + self.session_timeout
            conn.feed(data)
        except GracefulError as err:
            sel.unregister(conn.sock)
            del pending[conn]
            self._refuse(conn, err)
            return
        self._judge(sel, pending, p)

    def _judge(self, sel, pending, p: _Pending) -> None:
        """Judge what a waiting connection sent; start its session once its HELLO is in."""
        conn = p.conn
        try:
            hello = conn.next_frame(allowed=(FrameType.HELLO,))
            if hello is None:
                return
            judge_hello(hello)  # MALFORMED, UNSUPPORTED_VERSION first (NEG-6)
            if not self._busy.acquire(blocking=False):
                raise _fail("BUSY", "another receiver is taking the set")
        except GracefulError as err:
            sel.unregister(conn.sock)
            del pending[conn]
            self._refuse(conn, err)
            return
        sel.unregister(conn.sock)
        del pending[conn]
        conn.sock.setblocking(True)
        self._start_session(conn, hello)

    # -- sessions -----------------------------------------------------------

    def _start_session(self, conn: Conn, hello: Frame) -> None:
        with self._lock:
            if self._closed:
                self._busy.release()
                conn.close()
                return
            self._active.add(conn)
            t = threading.Thread(target=self._session, args=(conn, hello), name="graceful-session", daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _session(self, conn: Conn, hello: Frame) -> None:
        """One session and those that follow it where READY was awaited; then
        the connection goes back to the loop, to wait for a next HELLO."""
        claimed = True
        try:
            while True:
                conn.session_end = conn.session_end or time.monotonic() + self.session_timeout
                outcome, hello = send_session(conn, hello, self.descriptors, timeout=self.timeout,
                                              ready_timeout=self.ready_timeout, busy=self._busy, claimed=claimed)
                if hello is None:
                    break
                # A HELLO where READY was awaited: a new session at once.
                if not self._busy.acquire(blocking=False):
                    raise _fail("BUSY", "another receiver is taking the set")
                claimed = True
            result = Result(outcome=outcome)
        except GracefulError as err:
            result = Result(outcome=ACKED if getattr(err, "acked", False) else None,
                            error=None if getattr(err, "acked", False) else err)
            if result.error is not None:
                _fail_session(conn, err, self.timeout)
        except Exception as e:  # ERR-2: a bug of ours still closes everything
            err = _fail("OTHER", f"sender failed: {e!r}")
            _fail_session(conn, err, self.timeout)
            result = Result(error=err)
        with self._lock:
            self._active.discard(conn)
            back = result.outcome == READY and not self._closed
            if back:
                self._returned.append(_Pending(conn, time.monotonic() + self.timeout, READY))
        if back:
            self._wake()
            return
        conn.close()
        self.done(result)

    def serve_conn(self, conn: Conn) -> str:
        """Serve sessions on one connection (one the caller made, or accepted)
        until the receiver stops; the last outcome. Blocking, on this thread."""
        conn.receiver = False
        _refuse_rights(conn.sock)
        try:
            try:
                check_peer(peer_cred(conn.sock), self.authorize)
            except GracefulError as err:
                _fail_session(conn, err, self.timeout)  # AUTH-6: at once
                err.told = True
                raise
            conn.session_end = time.monotonic() + self.session_timeout
            frame = conn.read_frame(self.timeout, eof_ok=True, allowed=(FrameType.HELLO,))
            if frame is None:
                raise _fail("PEER_CLOSED", "connection closed before HELLO")
            while True:
                try:
                    outcome, frame = send_session(conn, frame, self.descriptors, timeout=self.timeout,
                                                  ready_timeout=self.ready_timeout,
                                                  session_timeout=self.session_timeout, busy=self._busy)
                except GracefulError as err:
                    if getattr(err, "acked", False):
                        return ACKED
                    raise
                if frame is None and outcome == READY:
                    try:  # a session boundary: another session may follow
                        frame = conn.read_frame(self.timeout, eof_ok=True, allowed=(FrameType.HELLO,))
                    except GracefulError as e:
                        if e.code not in ("TIMEOUT", "PEER_CLOSED"):
                            raise
                        frame = None  # an idle connection closed: not a failure
                if frame is None:
                    return outcome
                conn.session_end = time.monotonic() + self.session_timeout
        except GracefulError as err:
            _fail_session(conn, err, self.timeout)
            raise
        except Exception as e:  # ERR-2: a bug of ours still closes everything
            err = _fail("OTHER", f"sender failed: {e!r}")
            _fail_session(conn, err, self.timeout)
            raise err from e

    def close(self) -> None:
        """Stop accepting, end every connection, remove the socket file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = list(self._active)
        self._wake()
        for conn in active:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # our own connection, not a handed-over socket
            except OSError:
                pass
        if self._loop is not None:
            self._loop.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)
        if self._listener is not None:
            # The file goes while the socket still listens: a successor
            # replaces only a stale socket (AUTH-11), so none can have put
            # its own in place between the check and the unlink. Closed
            # first, a successor could, and this would remove its socket.
            try:
                if self._path_ino is not None and os.stat(self._path).st_ino == self._path_ino:
                    os.unlink(self._path)
            except OSError:
                pass
            self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
