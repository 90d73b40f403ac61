"""Unit tests of pygraceful: codec, receiver and sender over socketpairs.

Run: python3 -m unittest discover -s conformance/adapters/python
"""

from __future__ import annotations

import array
import fcntl
import os
import queue
import resource
import shutil
import socket
import struct
import tempfile
import threading
import time
import unittest
import unittest.mock

import pygraceful as pg

T = 2.0  # deadline of every blocking step in these tests
SHORT = 0.3  # deadline of steps that are meant to time out


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def frame(ftype: int, payload: bytes = b"", nfds: int = 0, flags: int = 0, length: int | None = None) -> bytes:
    return pg.HEADER.pack(ftype, flags, nfds, len(payload) if length is None else length) + payload


def record(kind: int = 0, meta: bytes | None = None, rflags: int | None = None, meta_length: int | None = None) -> bytes:
    body = meta or b""
    if rflags is None:
        rflags = pg.HAS_META if meta is not None else 0
    return struct.pack(">BBI", kind, rflags, len(body) if meta_length is None else meta_length) + body


WELCOME = frame(pg.FrameType.WELCOME, struct.pack(">H", 1))


def end(count: int) -> bytes:
    return frame(pg.FrameType.END, struct.pack(">I", count))


def send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    n = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    if n < len(data):
        sock.sendall(data[n:])


def recv_exact(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(T)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"{len(data)} of {n} bytes")
        data += chunk
    return data


def read_until_eof(sock: socket.socket) -> bytes:
    sock.settimeout(T)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def parse_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    frames = []
    while data:
        ftype, flags, nfds, length = pg.HEADER.unpack_from(data)
        assert flags == 0
        frames.append((ftype, nfds, data[8:8 + length]))
        data = data[8 + length:]
    return frames


def error_code(frames: list[tuple[int, int, bytes]]) -> int | None:
    errors = [struct.unpack_from(">H", p)[0] for t, _, p in frames if t == pg.FrameType.ERROR]
    return errors[-1] if errors else None


class Peer(threading.Thread):
    """Runs fn in a thread; finish() joins it within a deadline and re-raises its error."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = None
        self.error: BaseException | None = None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            self.error = e

    def finish(self, timeout: float = 10.0):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("peer thread did not finish before its deadline")
        if self.error is not None:
            raise self.error
        return self.result


def identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


class FdTestCase(unittest.TestCase):
    """Fails a test that leaves more descriptors open than it found."""

    def setUp(self):
        self._to_close: list[int] = []
        self._baseline = fd_count()

    def keep(self, *fds: int) -> None:
        self._to_close.extend(fds)

    def assertNoLeak(self):
        pg.close_fds(self._to_close)
        self._to_close = []
        self.assertEqual(fd_count(), self._baseline, "descriptors leaked: " + " ".join(os.listdir("/proc/self/fd")))

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.keep(r, w)
        return r, w


# ---------------------------------------------------------------------------


class CodecTest(unittest.TestCase):
    def test_frames_are_laid_out_big_endian(self):
        self.assertEqual(pg.encode_hello(), b"\x01\x00\x00\x00\x00\x00\x00\x0cGRACEFUL\x00\x01\x00\x01")
        self.assertEqual(pg.encode_welcome(1), b"\x02\x00\x00\x00\x00\x00\x00\x02\x00\x01")
        self.assertEqual(pg.encode_count(pg.FrameType.END, 258), b"\x04\x00\x00\x00\x00\x00\x00\x04\x00\x00\x01\x02")
        self.assertEqual(pg.encode_frame(pg.FrameType.READY), b"\x06\x00\x00\x00\x00\x00\x00\x00")
        batch = pg.encode_batch([pg.Descriptor(9, pg.Kind.LISTENER, b"ab"), pg.Descriptor(9, pg.Kind.FILE, None),
                                 pg.Descriptor(9, pg.Kind.RAW, b"")])
        self.assertEqual(batch, b"\x03\x00\x00\x03\x00\x00\x00\x14"
                                b"\x02\x01\x00\x00\x00\x02ab" b"\x01\x00\x00\x00\x00\x00" b"\x00\x01\x00\x00\x00\x00")

    def test_error_message_is_cut_at_1024_bytes_on_a_character_boundary(self):
        data = pg.encode_error(pg.Code.MALFORMED, "\u00e9" * 600)  # 1200 bytes of UTF-8
        code, n = struct.unpack_from(">HH", data, 8)
        self.assertEqual(code, 1)
        self.assertEqual(n, 1024)
        self.assertEqual(len(data), 8 + 4 + n)
        data[12:].decode("utf-8")
        err = pg.decode_error(data[8:])
        self.assertEqual(err.code, "MALFORMED")
        self.assertTrue(err.remote)

    def test_header_checks(self):
        cases = {
            "flags": ((pg.FrameType.WELCOME, 1, 0, 2), "MALFORMED"),
            "type 0": ((0, 0, 0, 0), "MALFORMED"),
            "type 8": ((8, 0, 0, 0), "MALFORMED"),
            "over 1 MiB": ((pg.FrameType.BATCH, 0, 1, pg.MAX_PAYLOAD + 1), "TOO_LARGE"),
            "BATCH nfds 0": ((pg.FrameType.BATCH, 0, 0, 6), "MALFORMED"),
            "BATCH nfds 253": ((pg.FrameType.BATCH, 0, 253, 253 * 6), "MALFORMED"),
            "BATCH too short for its records": ((pg.FrameType.BATCH, 0, 2, 11), "MALFORMED"),
            "END with nfds": ((pg.FrameType.END, 0, 1, 4), "MALFORMED"),
            "HELLO 11 bytes": ((pg.FrameType.HELLO, 0, 0, 11), "MALFORMED"),
            "WELCOME 3 bytes": ((pg.FrameType.WELCOME, 0, 0, 3), "MALFORMED"),
            "ACK 0 bytes": ((pg.FrameType.ACK, 0, 0, 0), "MALFORMED"),
            "READY 1 byte": ((pg.FrameType.READY, 0, 0, 1), "MALFORMED"),
            "ERROR 3 bytes": ((pg.FrameType.ERROR, 0, 0, 3), "MALFORMED"),
            "ERROR 1029 bytes": ((pg.FrameType.ERROR, 0, 0, 1029), "MALFORMED"),
        }
        for name, (header, code) in cases.items():
            with self.subTest(name):
                with self.assertRaises(pg.GracefulError) as cm:
                    pg.check_header(*header)
                self.assertEqual(cm.exception.code, code)
        for good in [(pg.FrameType.BATCH, 0, 252, pg.MAX_PAYLOAD), (pg.FrameType.ERROR, 0, 0, 1028),
                     (pg.FrameType.READY, 0, 0, 0), (pg.FrameType.HELLO, 0, 0, 12)]:
            pg.check_header(*good)

    def test_records_round_trip(self):
        ds = [pg.Descriptor(0, pg.Kind.PACKET, b"x" * pg.MAX_META), pg.Descriptor(0, pg.Kind.STREAM, None),
              pg.Descriptor(0, pg.Kind.RAW, b"")]
        payload = pg.encode_batch(ds)[8:]
        self.assertEqual(pg.decode_records(payload, 3), [(d.kind, d.meta) for d in ds])

    def test_bad_records(self):
        cases = {
            "unknown kind": (record(5), 1),
            "unknown rflags": (record(0, b"", rflags=3), 1),
            "meta over 64 KiB": (record(0, b"x" * 65537), 1),
            "meta_length without HAS_META": (record(0, None, meta_length=1) + b"x", 1),
            "meta runs past payload": (record(0, b"abc", meta_length=4), 1),
            "bytes after records": (record(0) + b"\x00", 1),
            "fewer records than nfds": (record(0), 2),
        }
        for name, (payload, nfds) in cases.items():
            with self.subTest(name):
                with self.assertRaises(pg.GracefulError) as cm:
                    pg.decode_records(payload, nfds)
                self.assertEqual(cm.exception.code, "MALFORMED")

    def test_unknown_error_code_is_a_failure(self):
        err = pg.decode_error(struct.pack(">HH", 99, 2) + b"hi")
        self.assertEqual(err.code, "OTHER")
        self.assertIn("99", err.message)
        self.assertEqual(pg.decode_error(struct.pack(">HH", 6, 3) + b"hi").code, "MALFORMED")

    def test_batches_hold_at_most_252_descriptors(self):
        plan = pg.plan_batches([pg.Descriptor(i) for i in range(600)])
        self.assertEqual([len(b) for b in plan], [252, 252, 96])
        self.assertEqual([d.fd for b in plan for d in b], list(range(600)))
        self.assertEqual(pg.plan_batches([]), [])

    def test_batches_stay_within_1_MiB(self):
        plan = pg.plan_batches([pg.Descriptor(i, meta=b"m" * pg.MAX_META) for i in range(20)])
        self.assertEqual([len(b) for b in plan], [15, 5])  # 16 records would be 1 048 672 bytes
        for b in plan:
            self.assertLessEqual(len(pg.encode_batch(b)) - 8, pg.MAX_PAYLOAD)

    def test_kv_round_trip_sorted_by_bytes(self):
        data = pg.encode_kv({"b": "2", "\u00e9": "", "a": "1"})
        self.assertEqual(data, b"\x00\x00\x00\x03" b"\x00\x00\x00\x01a\x00\x00\x00\x011" b"\x00\x00\x00\x01b\x00\x00\x00\x012"
                               b"\x00\x00\x00\x02\xc3\xa9\x00\x00\x00\x00")
        self.assertEqual(pg.decode_kv(data), {"a": "1", "b": "2", "\u00e9": ""})
        self.assertEqual(pg.decode_kv(pg.encode_kv({})), {})

    def test_kv_rejects_bad_input(self):
        one = b"\x00\x00\x00\x01\x00\x00\x00\x01k\x00\x00\x00\x01v"
        cases = {
            "empty": b"",
            "short count": b"\x00\x00\x01",
            "pairs past the end": b"\x00\x00\x00\x02" + one[4:],
            "key past the end": b"\x00\x00\x00\x01\x00\x00\x00\x05k",
            "value length past the end": one[:-3],
            "huge count": b"\xff\xff\xff\xff",
            "bytes left over": one + b"\x00",
            "repeated key": b"\x00\x00\x00\x02" + one[4:] + one[4:],
            "invalid UTF-8": b"\x00\x00\x00\x01\x00\x00\x00\x01\xff\x00\x00\x00\x00",
            "encoded surrogate": b"\x00\x00\x00\x01\x00\x00\x00\x03\xed\xa0\x80\x00\x00\x00\x00",
        }
        for name, data in cases.items():
            with self.subTest(name):
                with self.assertRaises(ValueError):
                    pg.decode_kv(data)


# ---------------------------------------------------------------------------


class ReceiverTest(FdTestCase):
    """pygraceful's receiver against a hand-written sender."""

    def receive(self, script, *, timeout: float = T, handler=None, check_kinds: bool = True):
        """Run receive_session against script(sock) as the sender.

        Returns (count or GracefulError, descriptors handed over, frames the
        receiver wrote after HELLO).
        """
        a, b = socket.socketpair()
        handed: list[pg.Descriptor] = []

        def sender():
            with a:
                hello = recv_exact(a, 20)
                self.assertEqual(hello, pg.encode_hello())
                data = script(a) or b""
                a.shutdown(socket.SHUT_WR)  # end of stream after the script
                return parse_frames(data + read_until_eof(a))

        peer = Peer(sender)
        conn = pg.Conn(b)
        try:
            outcome = pg.receive_session(conn, handler or handed.append, timeout, check_kinds)
        except pg.GracefulError as e:
            outcome = e
        finally:
            conn.close()
        frames = peer.finish()
        for d in handed:
            self.keep(d.fd)
        return outcome, handed, frames

    def assertFails(self, script, code: str, wire_code: int | None, **kw):
        outcome, handed, frames = self.receive(script, **kw)
        self.assertIsInstance(outcome, pg.GracefulError)
        self.assertEqual(outcome.code, code, outcome.message)
        self.assertEqual(handed, [], "a failed session handed descriptors over")
        self.assertEqual(error_code(frames), wire_code)
        self.assertNoLeak()
        return outcome

    def test_round_trip_of_every_kind(self):
        r, w = self.pipe()
        ln = socket.socket()
        ln.bind(("127.0.0.1", 0))
        ln.listen()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s1, s2 = socket.socketpair()
        sent = [pg.Descriptor(r, pg.Kind.FILE, None), pg.Descriptor(ln.fileno(), pg.Kind.LISTENER, b"http"),
                pg.Descriptor(udp.fileno(), pg.Kind.PACKET, b""), pg.Descriptor(s1.fileno(), pg.Kind.STREAM, b"\x00\xff"),
                pg.Descriptor(w, pg.Kind.RAW, None)]

        def script(sock):
            send_fds(sock, WELCOME + pg.encode_batch(sent), [d.fd for d in sent])
            sock.sendall(end(len(sent)))

        count, handed, frames = self.receive(script)
        self.assertEqual(count, len(sent))
        self.assertEqual(frames, [(pg.FrameType.ACK, 0, struct.pack(">I", len(sent)))])
        self.assertEqual([(d.kind, d.meta) for d in handed], [(d.kind, d.meta) for d in sent])
        self.assertEqual([identity(d.fd) for d in handed], [identity(d.fd) for d in sent])
        self.assertTrue(all(cloexec(d.fd) for d in handed), "received descriptors must be close-on-exec")
        self.assertNotIn(True, [d.fd == s.fd for d, s in zip(handed, sent)])
        for s in (ln, udp, s1, s2):
            s.close()
        self.assertNoLeak()

    def test_frames_split_into_single_bytes(self):
        r, _ = self.pipe()
        stream = WELCOME + pg.encode_batch([pg.Descriptor(r, pg.Kind.FILE, b"meta")]) + end(1)
        batch_at = len(WELCOME)

        def script(sock):
            for i in range(len(stream)):
                if i == batch_at:
                    send_fds(sock, stream[i:i + 1], [r])
                else:
                    sock.sendall(stream[i:i + 1])

        count, handed, _ = self.receive(script)
        self.assertEqual(count, 1)
        self.assertEqual(handed[0].meta, b"meta")
        self.assertEqual(identity(handed[0].fd), identity(r))
        self.assertNoLeak()

    def test_descriptors_may_ride_on_an_earlier_frame(self):
        r, w = self.pipe()

        def script(sock):  # TRN-3 / SND-4: on WELCOME's first byte, in the same call
            send_fds(sock, WELCOME + frame(pg.FrameType.BATCH, record(1) + record(1), 2) + end(2), [r, w])

        count, handed, _ = self.receive(script)
        self.assertEqual(count, 2)
        self.assertEqual([identity(d.fd) for d in handed], [identity(r), identity(w)])
        self.assertNoLeak()

    def test_many_batches(self):
        r, _ = self.pipe()
        fds = [os.dup(r) for _ in range(600)]
        self.keep(*fds)
        sent = [pg.Descriptor(fd, pg.Kind.FILE, str(i).encode()) for i, fd in enumerate(fds)]

        def script(sock):
            sock.sendall(WELCOME)
            for batch in pg.plan_batches(sent):
                send_fds(sock, pg.encode_batch(batch), [d.fd for d in batch])
            sock.sendall(end(600))

        count, handed, _ = self.receive(script)
        self.assertEqual(count, 600)
        self.assertEqual([d.meta for d in handed], [str(i).encode() for i in range(600)])
        self.assertNoLeak()

    def test_refused_descriptor(self):
        r, w = self.pipe()
        handed = []

        def refuse_second(d):
            handed.append(d)
            if len(handed) == 2:
                raise ValueError("no")

        def script(sock):
            send_fds(sock, WELCOME + frame(pg.FrameType.BATCH, record(1) * 3, 3) + end(3), [r, w, r])

        outcome, _, frames = self.receive(script, handler=refuse_second)
        self.assertEqual(outcome.code, "REJECTED")
        self.assertEqual(error_code(frames), pg.Code.REJECTED)
        self.assertEqual(len(handed), 2, "descriptors after the refused one are not handed over")
        self.keep(*(d.fd for d in handed))  # the handler owns what it was given
        self.assertNoLeak()

    def test_truncated_control_data(self):
        r, w = self.pipe()
        original = pg.Conn.ancbufsize
        pg.Conn.ancbufsize = socket.CMSG_SPACE(4)  # room for one descriptor of three
        try:
            def script(sock):
                send_fds(sock, WELCOME + frame(pg.FrameType.BATCH, record(1) * 3, 3) + end(3), [r, w, r])

            self.assertFails(script, "TRUNCATED", pg.Code.TRUNCATED)
        finally:
            pg.Conn.ancbufsize = original

    def test_every_rights_message_is_parsed(self):
        r, w = self.pipe()
        rights = lambda fds: (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())  # noqa: E731
        fds = pg.fds_from_ancdata([rights([r]), (socket.SOL_SOCKET, socket.SCM_CREDENTIALS, b"\x00" * 12),
                                   rights([w, r]), (socket.SOL_SOCKET, socket.SCM_RIGHTS, b"\x01\x00")])
        self.assertEqual(fds, [r, w, r])

    def test_malformed_input(self):
        def fd_pipe():
            r, w = self.pipe()
            return r, w

        r, w = fd_pipe()
        batch1 = frame(pg.FrameType.BATCH, record(1), 1)
        cases = {
            "flags set": (lambda s: s.sendall(frame(pg.FrameType.WELCOME, b"\x00\x01", flags=1)), "MALFORMED", 1),
            "unknown type": (lambda s: s.sendall(frame(9, b"")), "MALFORMED", 1),
            "version 2": (lambda s: s.sendall(frame(pg.FrameType.WELCOME, b"\x00\x02")), "UNSUPPORTED_VERSION", 2),
            "BATCH before WELCOME": (lambda s: send_fds(s, batch1, [r]), "MALFORMED", 1),
            "READY to the receiver": (lambda s: s.sendall(WELCOME + frame(pg.FrameType.READY)), "MALFORMED", 1),
            "END with nfds": (lambda s: s.sendall(WELCOME + frame(pg.FrameType.END, b"\0\0\0\0", 1)), "MALFORMED", 1),
            "missing descriptor": (lambda s: send_fds(s, WELCOME + frame(pg.FrameType.BATCH, record(1) * 2, 2) + end(2), [r]),
                                   "MALFORMED", 1),
            "extra descriptor": (lambda s: send_fds(s, WELCOME + batch1 + end(1), [r, w]), "MALFORMED", 1),
            "END count": (lambda s: send_fds(s, WELCOME + batch1 + end(2), [r]), "MALFORMED", 1),
            "nfds 0": (lambda s: s.sendall(WELCOME + frame(pg.FrameType.BATCH, record(1), 0)), "MALFORMED", 1),
            "nfds 253": (lambda s: send_fds(s, WELCOME + frame(pg.FrameType.BATCH, record(1) * 253, 253), [r] * 200),
                         "MALFORMED", 1),
            "bytes after records": (lambda s: send_fds(s, WELCOME + frame(pg.FrameType.BATCH, record(1) + b"x", 1) + end(1), [r]),
                                    "MALFORMED", 1),
            "unknown kind": (lambda s: send_fds(s, WELCOME + frame(pg.FrameType.BATCH, record(7), 1) + end(1), [r]), "MALFORMED", 1),
            "metadata over 64 KiB": (lambda s: send_fds(s, WELCOME + frame(pg.FrameType.BATCH, record(1, b"m" * 65537), 1) + end(1), [r]),
                                     "MALFORMED", 1),
            "kind lies": (lambda s: send_fds(s, WELCOME + frame(pg.FrameType.BATCH, record(2), 1) + end(1), [r]), "MALFORMED", 1),
            "frame over 1 MiB": (lambda s: send_fds(s, WELCOME + frame(pg.FrameType.BATCH, b"", 1, length=pg.MAX_PAYLOAD + 1), [r]),
                                 "TOO_LARGE", 4),
            "error frame": (lambda s: send_fds(s, WELCOME + batch1 + frame(pg.FrameType.ERROR, b"\x00\x07\x00\x02no"), [r]),
                            "SENDER_FAILED", None),
            "unknown error code": (lambda s: s.sendall(frame(pg.FrameType.ERROR, b"\x01\x00\x00\x00")), "OTHER", None),
            # ERR-3: a broken ERROR ends the session, and is never answered.
            "bad error frame": (lambda s: s.sendall(frame(pg.FrameType.ERROR, b"\x00\x01\x00\x09")), "MALFORMED", None),
            "ERROR with flags": (lambda s: s.sendall(frame(pg.FrameType.ERROR, b"\x00\x07\x00\x00", flags=1)), "MALFORMED", None),
            "end of stream at a frame boundary": (lambda s: send_fds(s, WELCOME + batch1, [r]), "PEER_CLOSED", None),
        }
        for name, (script, code, wire) in cases.items():
            with self.subTest(name):
                self.assertFails(script, code, wire)
                self.keep(*fd_pipe())  # assertFails closed the pipe; make the next one
                r, w = self._to_close[-2:]

    def test_more_than_252_queued_descriptors(self):
        r, _ = self.pipe()
        meta = b"m" * 60000
        body = record(1, meta)

        def script(sock):  # 2 x 200 descriptors while one BATCH is still incomplete (RCV-3)
            sock.sendall(WELCOME + frame(pg.FrameType.BATCH, body, 1)[:20])
            send_fds(sock, frame(pg.FrameType.BATCH, body, 1)[20:30000], [r] * 200)
            send_fds(sock, frame(pg.FrameType.BATCH, body, 1)[30000:], [r] * 200)

        self.assertFails(script, "MALFORMED", 1)

    def test_end_of_stream_at_every_byte(self):
        stream = WELCOME + frame(pg.FrameType.BATCH, record(1, b"xy"), 1) + end(1)
        for cut in range(1, len(stream)):
            with self.subTest(cut=cut):
                r, _ = self.pipe()  # assertFails closes it

                def script(sock, cut=cut, r=r):
                    head = stream[:cut]
                    if cut > len(WELCOME):
                        send_fds(sock, head[:len(WELCOME) + 1], [r])
                        head = head[len(WELCOME) + 1:]
                    if head:
                        sock.sendall(head)
                self.assertFails(script, "PEER_CLOSED", None)

    def test_ready_to_a_sender_that_has_gone_is_no_failure(self):
        a, b = socket.socketpair()
        a.close()
        conn = pg.Conn(b)
        pg.send_ready(conn, T)
        conn.close()
        self.assertNoLeak()

    def test_silent_sender_times_out(self):
        def script(sock):
            sock.sendall(WELCOME[:3])
            return read_until_eof(sock)  # and say no more until the receiver gives up

        self.assertFails(script, "TIMEOUT", None, timeout=SHORT)


# ---------------------------------------------------------------------------


class SenderTest(FdTestCase):
    """pygraceful's sender against a hand-written receiver."""

    def serve(self, descriptors, script, **kw):
        """Run Server.serve_conn against script(sock) as the receiver.

        Returns (outcome or GracefulError, what script returned).
        """
        server = pg.Server(descriptors, **{"timeout": T, "ready_timeout": T, **kw})
        a, b = socket.socketpair()

        def receiver():
            with b:
                return script(b)

        peer = Peer(receiver)
        conn = pg.Conn(a)
        try:
            outcome = server.serve_conn(conn)
        except pg.GracefulError as e:
            outcome = e
        finally:
            conn.close()
            server.close()
        return outcome, peer.finish()

    def read_frame(self, sock) -> tuple[int, int, bytes, list[int]]:
        """One frame, exactly; the descriptors that came with its header."""
        sock.settimeout(T)
        header, anc, flags, _ = sock.recvmsg(8, socket.CMSG_SPACE(253 * 4), socket.MSG_CMSG_CLOEXEC)
        self.assertFalse(flags & socket.MSG_CTRUNC)
        fds = pg.fds_from_ancdata(anc)
        self.keep(*fds)
        if len(header) < 8:
            header += recv_exact(sock, 8 - len(header))
        ftype, fl, nfds, length = pg.HEADER.unpack(header)
        self.assertEqual(fl, 0)
        return ftype, nfds, recv_exact(sock, length) if length else b"", fds

    def take_set(self, sock, hello=None) -> list[tuple[int, int, bytes, list[int]]]:
        sock.sendall(hello or pg.encode_hello())
        frames = [self.read_frame(sock)]
        while frames[-1][0] not in (pg.FrameType.END, pg.FrameType.ERROR):
            frames.append(self.read_frame(sock))
        return frames

    def test_wire_bytes_and_ready(self):
        r, w = self.pipe()
        sent = [pg.Descriptor(r, pg.Kind.FILE, b"one"), pg.Descriptor(w, pg.Kind.RAW, None)]

        def receiver(sock):
            frames = self.take_set(sock)
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 2) + pg.encode_frame(pg.FrameType.READY))
            return frames

        outcome, frames = self.serve(sent, receiver)
        self.assertEqual(outcome, pg.READY)
        welcome, batch, end_ = frames
        self.assertEqual(welcome[:3], (pg.FrameType.WELCOME, 0, b"\x00\x01"))
        self.assertEqual(batch[:3], (pg.FrameType.BATCH, 2, record(1, b"one") + record(0)))
        self.assertEqual(len(batch[3]), 2, "descriptors must come with the BATCH header")
        self.assertEqual([identity(fd) for fd in batch[3]], [identity(r), identity(w)])
        self.assertEqual(end_[:3], (pg.FrameType.END, 0, b"\x00\x00\x00\x02"))
        self.assertNoLeak()

    def test_acked_when_the_receiver_closes_or_stays_silent(self):
        r, _ = self.pipe()

        def close_after_ack(sock):
            self.take_set(sock)
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 1))

        def silent_after_ack(sock):
            close_after_ack(sock)
            return read_until_eof(sock)

        self.assertEqual(self.serve([pg.Descriptor(r)], close_after_ack)[0], pg.ACKED)
        self.assertEqual(self.serve([pg.Descriptor(r)], silent_after_ack, ready_timeout=SHORT, timeout=SHORT)[0], pg.ACKED)
        self.assertNoLeak()

    def test_frames_where_ready_is_awaited(self):
        r, _ = self.pipe()
        for name, (after, wire) in {
            "a second ACK": (pg.encode_count(pg.FrameType.ACK, 1), 1),
            "an ERROR": (pg.encode_error(pg.Code.REJECTED, "no"), None),
            "an unknown type": (frame(9, b""), 1),
        }.items():
            with self.subTest(name):
                def receiver(sock, after=after):
                    self.take_set(sock)
                    sock.sendall(pg.encode_count(pg.FrameType.ACK, 1) + after)
                    return parse_frames(read_until_eof(sock))

                outcome, frames = self.serve([pg.Descriptor(r)], receiver)
                self.assertEqual(outcome, pg.ACKED)  # received, not ready (RDY-2)
                self.assertEqual(error_code(frames), wire)
        self.assertNoLeak()

    def test_session_deadline(self):
        r, _ = self.pipe()

        def receiver(sock):
            self.take_set(sock)
            time.sleep(SHORT * 0.7)  # each step within its deadline, not the session
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 1))
            time.sleep(SHORT * 0.7)
            try:
                sock.sendall(pg.encode_frame(pg.FrameType.READY))
            except BrokenPipeError:
                pass  # the sender ended the session at its deadline

        outcome, _ = self.serve([pg.Descriptor(r)], receiver, timeout=SHORT, ready_timeout=SHORT * 4,
                                session_timeout=SHORT)
        self.assertEqual(outcome, pg.ACKED, "READY after the session deadline counted")
        self.assertNoLeak()

    def test_two_sessions_on_one_connection(self):
        r, _ = self.pipe()

        def receiver(sock):
            self.take_set(sock)
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 1))
            self.take_set(sock)  # a new HELLO instead of READY
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 1) + pg.encode_frame(pg.FrameType.READY))

        self.assertEqual(self.serve([pg.Descriptor(r)], receiver)[0], pg.READY)
        self.assertNoLeak()

    def test_large_sets_are_split(self):
        r, _ = self.pipe()
        sent = [pg.Descriptor(r, pg.Kind.FILE, b"m" * 65536 if i < 20 else None) for i in range(300)]

        def receiver(sock):
            frames = self.take_set(sock)
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 300))
            return frames

        outcome, frames = self.serve(sent, receiver)
        self.assertEqual(outcome, pg.ACKED)
        batches = [f for f in frames if f[0] == pg.FrameType.BATCH]
        self.assertEqual(sum(f[1] for f in batches), 300)
        for ftype, nfds, payload, fds in batches:
            self.assertLessEqual(nfds, 252)
            self.assertLessEqual(len(payload), pg.MAX_PAYLOAD)
            self.assertEqual(len(fds), nfds)
        self.assertEqual(frames[-1][2], struct.pack(">I", 300))
        self.assertNoLeak()

    def test_descriptors_keep_their_flags(self):
        ln = socket.socket()
        ln.setblocking(False)
        fl = fcntl.fcntl(ln.fileno(), fcntl.F_GETFL)

        def receiver(sock):
            self.take_set(sock)
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 1))

        self.serve([pg.Descriptor(ln.fileno(), pg.Kind.LISTENER)], receiver)
        self.assertEqual(fcntl.fcntl(ln.fileno(), fcntl.F_GETFL), fl)
        ln.close()
        self.assertNoLeak()

    def refused(self, hello: bytes, code: str, wire: int, **kw):
        r, _ = self.pipe()

        def receiver(sock):
            try:
                sock.sendall(hello)
            except BrokenPipeError:
                pass  # refused before our HELLO was written: its ERROR is still there to read (AUTH-9)
            data = read_until_eof(sock)
            return parse_frames(data)

        outcome, frames = self.serve([pg.Descriptor(r)], receiver, **kw)
        self.assertIsInstance(outcome, pg.GracefulError)
        self.assertEqual(outcome.code, code)
        self.assertEqual([f[0] for f in frames], [pg.FrameType.ERROR])
        self.assertEqual(error_code(frames), wire)
        self.assertNoLeak()

    def test_refusals(self):
        hello = lambda lo, hi: frame(pg.FrameType.HELLO, b"GRACEFUL" + struct.pack(">HH", lo, hi))  # noqa: E731
        self.refused(frame(pg.FrameType.HELLO, b"GRACEFUM\x00\x01\x00\x01"), "MALFORMED", 1)
        self.refused(hello(2, 3), "UNSUPPORTED_VERSION", 2)
        self.refused(hello(1, 0), "UNSUPPORTED_VERSION", 2)
        self.refused(frame(pg.FrameType.ACK, b"\0\0\0\0"), "MALFORMED", 1)
        self.refused(frame(pg.FrameType.HELLO, b"GRACEFUL\x00\x01\x00\x01", flags=2), "MALFORMED", 1)
        self.refused(pg.encode_hello(), "UNAUTHORIZED", 3, authorize=lambda cred: cred.uid != os.geteuid())
        # Refused at once, without waiting for a HELLO (AUTH-6).
        self.refused(b"", "UNAUTHORIZED", 3, authorize=lambda cred: False)
        # The first rule broken decides: nfds before length (FRM-4), the type where HELLO is due.
        self.refused(frame(pg.FrameType.HELLO, b"", nfds=1, length=2 << 20), "MALFORMED", 1)
        self.refused(frame(pg.FrameType.READY, b"", length=2 << 20), "MALFORMED", 1)
        self.refused(frame(pg.FrameType.HELLO, b"", length=2 << 20), "TOO_LARGE", 4)

    def test_version_choice(self):
        r, _ = self.pipe()

        def receiver(sock):
            frames = self.take_set(sock, frame(pg.FrameType.HELLO, b"GRACEFUL" + struct.pack(">HH", 0, 7)))
            sock.sendall(pg.encode_count(pg.FrameType.ACK, 1))
            return frames

        outcome, frames = self.serve([pg.Descriptor(r)], receiver)
        self.assertEqual(outcome, pg.ACKED)
        self.assertEqual(frames[0][2], b"\x00\x01")
        self.assertNoLeak()

    def test_failures_after_the_set(self):
        r, _ = self.pipe()
        cases = {
            "wrong ACK count": (pg.encode_count(pg.FrameType.ACK, 2), "MALFORMED", 1),
            "rejected": (pg.encode_error(pg.Code.REJECTED, "no"), "REJECTED", None),
            "closed before ACK": (b"", "PEER_CLOSED", None),
            "READY before ACK": (pg.encode_frame(pg.FrameType.READY), "MALFORMED", 1),
        }
        for name, (reply, code, wire) in cases.items():
            with self.subTest(name):
                def receiver(sock, reply=reply):
                    self.take_set(sock)
                    sock.sendall(reply)
                    sock.shutdown(socket.SHUT_WR)
                    return parse_frames(read_until_eof(sock))

                outcome, frames = self.serve([pg.Descriptor(r)], receiver)
                self.assertIsInstance(outcome, pg.GracefulError)
                self.assertEqual(outcome.code, code)
                self.assertEqual(error_code(frames), wire)
        self.assertNoLeak()

    def test_descriptors_from_the_receiver_are_never_held(self):
        r, _ = self.pipe()
        refused = []

        def receiver(sock):
            try:
                send_fds(sock, pg.encode_hello(), [r, r])
            except PermissionError:  # SO_PASSRIGHTS off (Linux 6.16 and later): the kernel refuses them
                refused.append(True)
                frames = self.take_set(sock)
                sock.sendall(pg.encode_count(pg.FrameType.ACK, 1))
                return frames
            return parse_frames(read_until_eof(sock))

        outcome, frames = self.serve([pg.Descriptor(r)], receiver)
        if not refused:  # read with no control buffer: discarded, and the session fails
            self.assertEqual(outcome.code, "MALFORMED")
            self.assertEqual(error_code(frames), 1)
        self.assertNoLeak()

    def test_bad_descriptor_sends_sender_failed_instead_of_end(self):
        r, _ = self.pipe()
        bad = resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 1  # can never be open

        def receiver(sock):
            frames = self.take_set(sock)
            return frames + [f + ([],) for f in parse_frames(read_until_eof(sock))]

        outcome, frames = self.serve([pg.Descriptor(r), pg.Descriptor(bad)], receiver)
        self.assertEqual(outcome.code, "SENDER_FAILED")
        self.assertEqual([f[0] for f in frames], [pg.FrameType.WELCOME, pg.FrameType.ERROR])
        self.assertEqual(struct.unpack_from(">H", frames[1][2])[0], pg.Code.SENDER_FAILED)
        self.assertNoLeak()

    def test_silent_receiver_times_out(self):
        r, _ = self.pipe()
        outcome, _ = self.serve([pg.Descriptor(r)], read_until_eof, timeout=SHORT)
        self.assertEqual(outcome.code, "TIMEOUT")
        self.assertNoLeak()

    def test_overflow_ids_never_pass(self):
        for cred in [pg.PeerCred(1, pg.OVERFLOW_UID, 0), pg.PeerCred(1, 0, pg.OVERFLOW_GID)]:
            with self.assertRaises(pg.GracefulError) as cm:
                pg.check_peer(cred, lambda c: True)
            self.assertEqual(cm.exception.code, "UNAUTHORIZED")
        pg.check_peer(pg.PeerCred(1, os.geteuid(), 0), None)
        with self.assertRaises(pg.GracefulError):
            pg.check_peer(pg.PeerCred(1, os.geteuid() + 1, 0), None)

    def test_metadata_over_64_KiB_is_refused_before_serving(self):
        with self.assertRaises(pg.GracefulError) as cm:
            pg.Server([pg.Descriptor(0, meta=b"x" * 65537)])
        self.assertEqual(cm.exception.code, "TOO_LARGE")


class ServerTest(FdTestCase):
    """The whole sender, listening on a path, against pygraceful's receiver."""

    def server(self, **kw):
        r, _ = self.pipe()
        d = tempfile.mkdtemp(prefix="gf")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "s")
        results: queue.Queue[pg.Result] = queue.Queue()
        server = pg.Server([pg.Descriptor(r, pg.Kind.FILE, b"x")], timeout=T, ready_timeout=T, done=results.put, **kw)
        server.listen(path)
        server.start()
        self.addCleanup(server.close)
        return server, path, results

    def test_pending_connections_are_bounded_and_cost_no_thread(self):
        server, path, results = self.server(max_pending=4)
        threads = threading.active_count()
        silent = [socket.socket(socket.AF_UNIX) for _ in range(10)]
        for s in silent:
            s.connect(path)
            self.addCleanup(s.close)
        handed = []
        self.assertEqual(pg.receive(path, handed.append, timeout=T), 1)  # served in the middle of them
        self.keep(*(h.fd for h in handed))
        self.assertLessEqual(threading.active_count(), threads + 1, "a thread per waiting connection")
        # The seven oldest were closed (LIM-3): the four newest, the receiver's
        # among them, were waiting when it said HELLO.
        for s in silent[:7]:
            s.settimeout(T)
            self.assertEqual(s.recv(1), b"")
        for s in silent[7:]:
            s.setblocking(False)
            with self.assertRaises(BlockingIOError):
                s.recv(1)

    def test_listen_refuses_what_is_not_a_stale_socket(self):
        d = tempfile.mkdtemp(prefix="gf")
        try:
            path = os.path.join(d, "s")
            with open(path, "w") as f:
                f.write("keep me")
            with self.assertRaises(OSError):
                pg.listen_unix(path)
            with open(path) as f:
                self.assertEqual(f.read(), "keep me")
            os.unlink(path)
            stale = socket.socket(socket.AF_UNIX)
            stale.bind(path)
            stale.close()
            pg.listen_unix(path).close()  # a stale socket is replaced
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        finally:
            shutil.rmtree(d)

    def test_abstract_address(self):
        r, _ = self.pipe()
        name = f"@gf-test-{os.getpid()}"
        results: queue.Queue[pg.Result] = queue.Queue()
        server = pg.Server([pg.Descriptor(r, pg.Kind.FILE, b"x")], timeout=T, ready_timeout=T, done=results.put)
        server.listen(name)
        server.start()
        try:
            handed = []
            self.assertEqual(pg.receive(name, handed.append, timeout=T), 1)
            self.keep(*(h.fd for h in handed))
            self.assertEqual(results.get(timeout=T * 3).outcome, pg.READY)
        finally:
            server.close()
        self.assertNoLeak()

    def test_receiver_refuses_a_sender_it_does_not_admit(self):
        server, path, results = self.server()
        handed = []
        with self.assertRaises(pg.GracefulError) as cm:
            pg.receive(path, handed.append, timeout=T, authorize=lambda cred: False)
        self.assertEqual(cm.exception.code, "UNAUTHORIZED")
        self.assertEqual(handed, [])
        res = results.get(timeout=T * 3)  # the server never saw a HELLO
        self.assertIsNotNone(res.error)

    def test_receiver_limits(self):
        server, path, results = self.server()
        handed = []
        with self.assertRaises(pg.GracefulError) as cm:
            pg.receive(path, handed.append, timeout=T, limits=pg.Limits(max_fds=0))
        self.assertEqual(cm.exception.code, "TOO_LARGE")
        self.assertEqual(handed, [])

    def test_listen_receive_and_busy(self):
        r, _ = self.pipe()
        d = tempfile.mkdtemp(prefix="gf")
        path = os.path.join(d, "s")
        results: queue.Queue[pg.Result] = queue.Queue()

        def outcomes(n):
            got = [results.get(timeout=T * 3) for _ in range(n)]
            return sorted(res.outcome or res.error.code for res in got)

        server = pg.Server([pg.Descriptor(r, pg.Kind.FILE, b"x")], timeout=T, ready_timeout=T, done=results.put)
        server.listen(path)
        server.start()
        try:
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            self.assertEqual(os.listdir(d), ["s"])

            # One receiver holds the session (between END and ACK) while a second says HELLO.
            second_outcome = []

            def hold(desc):
                self.keep(desc.fd)
                conn = pg.Conn(pg.connect(path, T))
                try:
                    pg.receive_session(conn, lambda d: self.keep(d.fd), T)
                except pg.GracefulError as e:
                    second_outcome.append(e.code)
                finally:
                    conn.close()

            self.assertEqual(pg.receive(path, hold, timeout=T), 1)
            self.assertEqual(second_outcome, ["BUSY"])
            self.assertEqual(outcomes(2), ["BUSY", "ready"])
            handed = []
            self.assertEqual(pg.receive(path, handed.append, timeout=T), 1)  # free again
            self.keep(*(h.fd for h in handed))
            self.assertEqual(outcomes(1), ["ready"])
        finally:
            server.close()
        self.assertFalse(os.path.exists(path))
        os.rmdir(d)
        self.assertNoLeak()

    def test_close_never_removes_a_successors_socket(self):
        # A successor places its socket as soon as ours is stale (listen
        # replaces only a stale one). Played here at the worst moment:
        # right after close has checked that the file is still ours.
        d = tempfile.mkdtemp(prefix="gf")
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "s")
        server = pg.Server([])
        server.listen(path)
        successor: list[socket.socket] = []
        real_stat = os.stat

        def stat_then_successor(p, *a, **kw):
            st = real_stat(p, *a, **kw)
            if p == path and not successor:
                try:
                    successor.append(pg.listen_unix(path))
                except OSError:
                    successor.append(None)  # ours still listens: it must wait
            return st

        with unittest.mock.patch.object(pg.os, "stat", stat_then_successor):
            server.close()
        self.assertEqual(len(successor), 1, "close did not look at the file")
        if successor[0] is not None:
            self.addCleanup(successor[0].close)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(probe.close)
            probe.connect(path)  # the successor's socket is still there


class VacateTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "s")

    def stale_socket(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        s.close()  # the file stays, and refuses connections

    def test_listen_places_a_socket_that_already_listens(self):
        # Put in place before listen(), it would refuse connections for a
        # moment: a stale socket, which another process may replace.
        real_rename = os.rename
        listening: list[bool] = []

        def probe_then_rename(src, dst, *a, **kw):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(src)
                listening.append(True)
            except ConnectionRefusedError:
                listening.append(False)
            finally:
                probe.close()
            return real_rename(src, dst, *a, **kw)

        with unittest.mock.patch.object(pg.os, "rename", probe_then_rename):
            pg.listen_unix(self.path).close()
        self.assertEqual(listening, [True])

    def test_removes_a_stale_socket(self):
        self.stale_socket()
        pg._vacate(self.path)
        self.assertFalse(os.path.lexists(self.path))

    def test_a_stale_socket_its_owner_removed_meanwhile_is_as_good_as_removed(self):
        # A retiring server unlinks its own socket file as it closes, which
        # can come between the probe and our unlink.
        self.stale_socket()
        real = os.unlink

        def owner_first(path, *args, **kwargs):
            real(path)
            return real(path, *args, **kwargs)

        with unittest.mock.patch.object(pg.os, "unlink", owner_first):
            pg._vacate(self.path)
        self.assertFalse(os.path.lexists(self.path))

    def test_refuses_a_live_socket(self):
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(live.close)
        live.bind(self.path)
        live.listen(1)
        with self.assertRaises(OSError):
            pg._vacate(self.path)
        self.assertTrue(os.path.lexists(self.path))


class SpareTest(FdTestCase):
    """await_turn: a process a supervisor started as a spare waits for its turn."""

    def setUp(self):
        super().setUp()
        pg._turn.clear()
        self.addCleanup(pg._turn.clear)
        self.addCleanup(os.environ.pop, pg.SPARE_ENV, None)
        # The pair is made here: this process plays the parent.
        patch = unittest.mock.patch.object(pg.os, "getppid", os.getpid)
        patch.start()
        self.addCleanup(patch.stop)

    def spare(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        os.environ[pg.SPARE_ENV] = str(theirs.detach())
        return ours

    def test_goes_on_when_its_turn_comes(self):
        ours = self.spare()
        done: queue.Queue = queue.Queue()
        t = threading.Thread(target=lambda: done.put(pg.await_turn()))
        t.start()
        self.assertEqual(ours.recv(1), b"W")
        self.assertTrue(done.empty(), "went on before its turn")
        ours.sendall(b"G")
        t.join(10)
        self.assertIsNone(done.get_nowait())
        self.assertNotIn(pg.SPARE_ENV, os.environ)
        ours.close()
        self.assertNoLeak()
        pg.await_turn()  # once only: no second wait

    def test_goes_on_when_its_turn_came_before_it_waited(self):
        ours = self.spare()
        ours.sendall(b"G")
        ours.close()  # the write of b"W" fails now
        pg.await_turn()
        self.assertNoLeak()

    def test_dismissed_when_the_supervisor_closes(self):
        ours = self.spare()
        errors: queue.Queue = queue.Queue()

        def wait():
            try:
                pg.await_turn()
            except pg.GracefulError as e:
                errors.put(e)

        t = threading.Thread(target=wait)
        t.start()
        self.assertEqual(ours.recv(1), b"W")
        ours.close()
        t.join(10)
        self.assertIn("spare dismissed before its turn came", str(errors.get_nowait()))
        with self.assertRaisesRegex(pg.GracefulError, "spare dismissed"):
            pg.await_turn()  # the same outcome again
        self.assertNoLeak()

    def test_refuses_a_socket_whose_peer_is_not_its_parent(self):
        ours = self.spare()
        theirs = int(os.environ[pg.SPARE_ENV])
        with unittest.mock.patch.object(pg.os, "getppid", lambda: 1):
            with self.assertRaisesRegex(pg.GracefulError, r"its peer \(pid \d+, uid \d+\) is not this process's parent \(pid 1\)"):
                pg.await_turn()
        os.fstat(theirs)  # left open: not the spare's
        os.close(theirs)
        ours.close()
        self.assertNoLeak()

    def test_refuses_what_is_no_descriptor_at_once(self):
        os.environ[pg.SPARE_ENV] = "three"
        with self.assertRaisesRegex(pg.GracefulError, "not a descriptor"):
            pg.await_turn()

    def test_no_wait_without_the_variable(self):
        pg.await_turn()
        self.assertNoLeak()


if __name__ == "__main__":
    unittest.main()
