"""Tests of adapter.py as a process, the way the conformance suite drives it."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import pygraceful as pg

ADAPTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adapter.py")
WAIT = 10.0  # the longest any answer may take


class AdapterProc:
    """adapter.py in a child process; inherit lists the fds it gets at 3, 4, ..."""

    def __init__(self, inherit: list[int] = ()):
        inherit = list(inherit)

        def place_fds():  # in the child between fork and exec, before it closes other fds
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in inherit]  # out of the way of 3, 4, ...
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i)
                os.close(fd)

        self.proc = subprocess.Popen([sys.executable, ADAPTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, preexec_fn=place_fds if inherit else None,
                                     pass_fds=range(3, 3 + len(inherit)))
        self.seq = 0

    def send_line(self, line: bytes) -> dict | None:
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        if not ready:
            raise AssertionError("no answer from the adapter")
        out = self.proc.stdout.readline()
        return json.loads(out) if out else None

    def call(self, op: str, **fields) -> dict:
        self.seq += 1
        answer = self.send_line(json.dumps({"seq": self.seq, "op": op, **fields}).encode() + b"\n")
        assert answer is not None and answer["seq"] == self.seq, answer
        return answer

    def wait(self) -> int:
        self.proc.stdin.close()
        try:
            return self.proc.wait(WAIT)
        finally:
            self.proc.stdout.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class AdapterTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gf")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "s")
        self.procs: list[AdapterProc] = []

    def tearDown(self):
        for p in self.procs:
            p.kill()

    def adapter(self, inherit=()) -> AdapterProc:
        p = AdapterProc(inherit)
        self.procs.append(p)
        self.assertEqual(p.call("hello", contracts=[1])["contract"], 1)
        return p

    def finish(self, p: AdapterProc):
        self.assertEqual(p.call("exit"), {"seq": p.seq, "ok": True, "done": True})
        self.assertEqual(p.wait(), 0)

    def test_interoperates_with_itself_and_answers_challenges(self):
        ln = socket.create_server(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        f = tempfile.TemporaryFile()
        f.write(b"0123456789")
        f.flush()
        originals = [ln, f, udp]
        sender = self.adapter([o.fileno() for o in originals])
        descs = [{"fd": 3, "kind": "listener", "meta": b64(b"http")}, {"fd": 4, "kind": "file", "meta": None},
                 {"fd": 5, "kind": "packet", "meta": None, "kv": {"b": "2", "a": "1"}}]
        self.assertEqual(sender.call("serve", socket=self.path, timeout_ms=2000, ready_timeout_ms=2000,
                                     descriptors=descs)["ok"], True)
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)

        receiver = self.adapter()
        got = receiver.call("receive", socket=self.path, timeout_ms=2000, ready=True, reject=None, kv=True)
        self.assertTrue(got["ok"], got)
        self.assertEqual([(d["kind"], d["meta"]) for d in got["descriptors"]],
                         [("listener", b64(b"http")), ("file", None), ("packet", b64(pg.encode_kv({"a": "1", "b": "2"})))])
        self.assertEqual([d["kv"] for d in got["descriptors"]], [None, None, {"a": "1", "b": "2"}])
        self.assertNotIn("kv_error", got["descriptors"][2])
        self.assertIn("kv_error", got["descriptors"][0] | {"kv_error": None})  # "http" as kv: allowed either way
        self.assertEqual(sender.call("result"), {"seq": sender.seq, "ok": True, "outcome": "ready"})

        pid = receiver.proc.pid
        for d, original in zip(got["descriptors"], originals):
            held = os.stat(f"/proc/{pid}/fd/{d['fd']}")
            mine = os.fstat(original.fileno())
            self.assertEqual((held.st_dev, held.st_ino), (mine.st_dev, mine.st_ino))

        with socket.create_connection(ln.getsockname(), timeout=WAIT) as c:
            c.sendall(b"nonce-1")
            c.shutdown(socket.SHUT_WR)
            answer = receiver.call("challenge", index=0, action="accept", offset=0, length=0, timeout_ms=2000)
        self.assertEqual(answer["data"], b64(b"nonce-1"))
        answer = receiver.call("challenge", index=1, action="pread", offset=3, length=4, timeout_ms=2000)
        self.assertEqual(answer["data"], b64(b"3456"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"datagram", udp.getsockname())
            answer = receiver.call("challenge", index=2, action="recv", offset=0, length=0, timeout_ms=2000)
        self.assertEqual(answer["data"], b64(b"datagram"))
        answer = receiver.call("challenge", index=2, action="recv", offset=0, length=0, timeout_ms=200)
        self.assertEqual(answer["error"]["code"], "TIMEOUT")

        self.finish(receiver)
        self.finish(sender)
        self.assertFalse(os.path.exists(self.path))
        for o in originals:
            o.close()

    def test_refused_descriptor_is_reported_and_kept(self):
        r, w = os.pipe()
        sender = self.adapter([r, w])
        descs = [{"fd": 3, "kind": "file", "meta": None}, {"fd": 4, "kind": "file", "meta": ""}]
        self.assertTrue(sender.call("serve", socket=self.path, timeout_ms=2000, ready_timeout_ms=2000,
                                    descriptors=descs)["ok"])
        receiver = self.adapter()
        got = receiver.call("receive", socket=self.path, timeout_ms=2000, ready=True, reject=0, kv=False)
        self.assertFalse(got["ok"])
        self.assertEqual(got["error"]["code"], "REJECTED")
        self.assertEqual(len(got["descriptors"]), 1)
        held = os.stat(f"/proc/{receiver.proc.pid}/fd/{got['descriptors'][0]['fd']}")
        self.assertEqual(held.st_ino, os.fstat(r).st_ino)
        fds = os.listdir(f"/proc/{receiver.proc.pid}/fd")
        self.assertEqual(len(fds), 4, f"stdin, stdout, stderr and the kept descriptor only: {fds}")
        result = sender.call("result")
        self.assertEqual(result["error"]["code"], "REJECTED")
        self.finish(receiver)
        self.finish(sender)
        os.close(r)
        os.close(w)

    def test_metadata_over_the_limit_is_refused_before_listening(self):
        r, w = os.pipe()
        sender = self.adapter([r])
        answer = sender.call("serve", socket=self.path, timeout_ms=1000, ready_timeout_ms=1000,
                             descriptors=[{"fd": 3, "kind": "file", "meta": b64(b"x" * 65537)}])
        self.assertEqual(answer["error"]["code"], "TOO_LARGE")
        self.assertFalse(os.path.exists(self.path))
        self.finish(sender)
        os.close(r)
        os.close(w)

    def test_exit_statuses(self):
        p = AdapterProc()
        self.procs.append(p)
        answer = p.call("hello", contracts=[7])
        self.assertEqual(answer["error"]["code"], "OTHER")
        self.assertEqual(p.wait(), 3)

        p = self.adapter()
        self.assertFalse(p.call("launch")["ok"])
        self.assertEqual(p.wait(), 2)

        p = self.adapter()
        self.assertIsNone(p.send_line(b"{not json\n"))
        self.assertEqual(p.wait(), 2)

        p = self.adapter()
        self.assertEqual(p.wait(), 1)  # stdin ended before exit


if __name__ == "__main__":
    unittest.main()
