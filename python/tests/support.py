"""Real parts for the tests: a private redis-server and `ssehub serve`, each
on a free 127.0.0.1 port, and a reader of event streams."""

import http.client
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT = 20.0  # bounds every wait; no assertion depends on timing


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary):
    """The path of a program the tests need; under CI a missing one fails."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("%s is not installed" % binary)
        raise unittest.SkipTest("%s is not installed" % binary)
    return path


class RedisServer:
    """A redis-server of the test's own, keeping nothing on disk."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ssehub-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [need("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def close(self):
        self.client.close()
        self.proc.terminate()
        self.proc.wait(WAIT)
        shutil.rmtree(self.dir, ignore_errors=True)


_binary = None
_binary_lock = threading.Lock()


def hub_binary():
    """The ssehub binary: $SSEHUB_BIN, or one built from this checkout."""
    global _binary
    with _binary_lock:
        if _binary is None:
            _binary = os.environ.get("SSEHUB_BIN")
            if not _binary:
                out = os.path.join(tempfile.mkdtemp(prefix="ssehub-bin-"), "ssehub")
                subprocess.run([need("go"), "build", "-o", out, "./cmd/ssehub"], cwd=ROOT, check=True)
                _binary = out
        return _binary


class Hub:
    """`ssehub serve` on a free loopback port."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [hub_binary(), "serve", "--addr", "127.0.0.1:0", "--heartbeat", "1h"] + list(args),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        addr = []
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                m = re.search(r"msg=listening addr=(\S+)", line)
                if m and not addr:
                    addr.append(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(WAIT) or not addr:
            self.close()
            raise RuntimeError("ssehub serve did not listen")
        self.url = "http://" + addr[0]

    def close(self):
        self.proc.kill()
        self.proc.wait(WAIT)


class Stream:
    """A GET /sse request read as a browser's EventSource reads it."""

    def __init__(self, hub_url, channel="sse", last_event_id=None):
        u = urllib.parse.urlsplit(hub_url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=WAIT)
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", "/sse?" + urllib.parse.urlencode({"channel": channel}), headers=headers)
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise AssertionError("GET /sse: %d %s" % (self.resp.status, self.resp.read()))
        self.last_id = last_event_id or ""

    def next(self):
        """The next dispatched event: (type, data, last event id)."""
        data, typ = [], ""
        while True:
            line = self.resp.readline()
            if not line:
                raise AssertionError("the stream ended")
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if data:
                    return typ or "message", "\n".join(data), self.last_id
                typ = ""
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                typ = value
            elif field == "id" and "\x00" not in value:
                self.last_id = value

    def close(self):
        self.conn.close()
