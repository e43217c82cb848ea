#!/usr/bin/env python3
"""Captures what invenio-sse and flask-sse put on Redis and stream to browsers.

For each publish below it records the payload the library PUBLISHes and the
bytes its /sse (invenio-sse) or /stream (flask-sse) view writes for it, by
running the libraries' own code against a private redis-server. The result is
broker/redisbroker/testdata/legacy.json, which the Go tests compare ssehub's
streams with, so the tests need neither library.

Run it with both libraries importable, Flask and redis-py installed, and
redis-server on PATH:

    PYTHONPATH=/path/to/libs python3 scripts/capture-legacy.py > broker/redisbroker/testdata/legacy.json

The committed file was made with invenio-sse 1.0.0a2, flask-sse 1.0.0,
Flask 2.2.2 and redis-py 4.3.4 (Debian 12), Python 3.11.
"""

import json
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time

import flask
import flask_sse
import invenio_sse
import redis
from invenio_sse.cli import sse as invenio_cli
from invenio_sse.proxies import current_sse


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tap:
    """Collects the items of a blocking iterator in a thread."""

    def __init__(self, make):
        self.q = queue.Queue()
        threading.Thread(target=self._run, args=(make,), daemon=True).start()

    def _run(self, make):
        try:
            for item in make():
                self.q.put(item)
        except redis.ConnectionError:
            pass  # redis-server stopped: the capture is over

    def next(self):
        return self.q.get(timeout=5)


def wait_subscribers(r, channel, n):
    deadline = time.monotonic() + 5
    while dict(r.pubsub_numsub(channel)).get(channel.encode(), 0) < n:
        if time.monotonic() > deadline:
            sys.exit("capture-legacy: subscribers did not come")
        time.sleep(0.01)


def raw_payloads(url, channel):
    def gen():
        ps = redis.Redis.from_url(url).pubsub()
        ps.subscribe(channel)
        for m in ps.listen():
            if m["type"] == "message":
                yield m["data"].decode("utf-8")

    return gen


# (call as written, keyword arguments) for invenio-sse's publish().
INVENIO_PUBLISH = [
    ("publish({'code': 'COOL', 'msg': 'cool message'})", ({"code": "COOL", "msg": "cool message"},), {}),
    ("publish({'code': 'ACK', 'msg': 'cool message'}, type_='cool', id_=12345, retry=6000)",
     ({"code": "ACK", "msg": "cool message"},), {"type_": "cool", "id_": 12345, "retry": 6000}),
    ("publish('line1\\nline2')", ("line1\nline2",), {}),
    ("publish('caf\\u00e9 \\u2028 \\U0001F600 <&>')", ("caf\u00e9 \u2028 \U0001F600 <&>",), {"id_": "u"}),
    ("publish({'b': 1, 'a': [1.0, 1e16, 1e15, 1e-05, 0.0001, 0.1, -0.0, 10**20, 1.5e300]})",
     ({"b": 1, "a": [1.0, 1e16, 1e15, 1e-05, 0.0001, 0.1, -0.0, 10**20, 1.5e300]},), {"id_": "f"}),
    ("publish(float('nan'), id_=float('inf'))", (float("nan"),), {"id_": float("inf")}),
    ("publish([float('-inf'), '\\x00\\x1f\\x7f'], id_='0')", ([float("-inf"), "\x00\x1f\x7f"],), {"id_": "0"}),
    ("publish(None, type_=' t', id_=' 5', retry=' 600')", (None,), {"type_": " t", "id_": " 5", "retry": " 600"}),
    ("publish({'x': 1}, retry='6000')", ({"x": 1},), {"retry": "6000", "id_": "r"}),
    ("publish(True, id_=1.5, retry=2.5)", (True,), {"id_": 1.5, "retry": 2.5}),
    ("publish([], id_=True, type_=0, retry=False)", ([],), {"id_": True, "type_": 0, "retry": False}),
    ("publish('x', type_=['a', \"b'\"], id_={'k': None})", ("x",), {"type_": ["a", "b'"], "id_": {"k": None}}),
    ("publish('', type_='', id_='', retry=0)", ("",), {"type_": "", "retry": 0}),
    ("publish(1, id_=1795238353.2229617)", (1,), {"id_": 1795238353.2229617}),
]

# Arguments and stdin of invenio-sse's `flask sse publish`.
INVENIO_CLI = [
    (["--type", "cool", "--id", "12345", "--retry", "6000"], '{"code": "ACK", "msg": "cool message"}\n'),
    (["--id", "7"], "line1\nline2\n"),
    (["--id", "8"], "no final newline"),
    (["--id", "9"], ""),
]

# (call as written, arguments, keyword arguments) for flask-sse's sse.publish().
FLASK_PUBLISH = [
    ("publish('foo', type='example', id=5, retry=500)", ("foo",), {"type": "example", "id": 5, "retry": 500}),
    ("publish({'a': 1})", ({"a": 1},), {}),
    ("publish({'b': [1, 2.0], 'a': '\\u00e9', 'c': {'z': 1, 'y': None}})",
     ({"b": [1, 2.0], "a": "\u00e9", "c": {"z": 1, "y": None}},), {}),
    ("publish('abc\\n')", ("abc\n",), {}),
    ("publish(' x')", (" x",), {}),
    ("publish('  two spaces')", ("  two spaces",), {}),
    ("publish('')", ("",), {}),
    ("publish('', type='t', id='7')", ("",), {"type": "t", "id": "7"}),
    ("publish('\\n')", ("\n",), {}),
    ("publish('a\\u2028b\\u2029c\\x0bd\\x0ce\\x1cf\\x1dg\\x1eh\\x85i')", ("a\u2028b\u2029c\x0bd\x0ce\x1cf\x1dg\x1eh\x85i",), {}),
    ("publish('a\\r\\nb\\rc\\n\\nd\\n\\n')", ("a\r\nb\rc\n\nd\n\n",), {}),
    ("publish('x', type=' t', id=' 5', retry=' 600')", ("x",), {"type": " t", "id": " 5", "retry": " 600"}),
    ("publish(12.0, id=1.5)", (12.0,), {"id": 1.5}),
    ("publish(None)", (None,), {}),
    ("publish('x', retry='6000')", ("x",), {"retry": "6000"}),
    ("publish(['l1\\n', 'l2'], id=True, retry=True)", (["l1\n", "l2"],), {"id": True, "retry": True}),
    ("publish('data:x\\n:y')", ("data:x\n:y",), {}),
]


def main():
    port = free_port()
    tmp = tempfile.mkdtemp()
    srv = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = "redis://127.0.0.1:%d/0" % port
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 5
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        cases = capture_invenio(url, r) + capture_flask(url, r)
    finally:
        srv.terminate()
        srv.wait()
    json.dump(cases, sys.stdout, indent=1, ensure_ascii=True)
    sys.stdout.write("\n")


def capture_invenio(url, r):
    app = flask.Flask("capture")
    app.config["SSE_REDIS_URL"] = url
    invenio_sse.InvenioSSE(app)
    ch = "invenio"
    cases = []
    with app.app_context():
        raw = Tap(raw_payloads(url, ch))
        state = app.extensions["invenio-sse"]
        view = Tap(lambda: state.messages(channel=ch))
        wait_subscribers(r, ch, 2)
        for call, args, kwargs in INVENIO_PUBLISH:
            current_sse.publish(*args, channel=ch, **kwargs)
            cases.append({"lib": "invenio-sse", "call": call, "payload": raw.next(), "frame": view.next()})
        runner = app.test_cli_runner()
        for args, stdin in INVENIO_CLI:
            res = runner.invoke(invenio_cli, ["publish", "--channel", ch] + args + ["-"], input=stdin)
            if res.exit_code != 0:
                sys.exit("capture-legacy: flask sse publish: %s" % res.output)
            call = "flask sse publish %s < %s" % (" ".join(args), json.dumps(stdin))
            cases.append({"lib": "invenio-sse", "call": call, "payload": raw.next(), "frame": view.next()})
    return cases


def capture_flask(url, r):
    app = flask.Flask("capture")
    app.config["SSE_REDIS_URL"] = url
    app.register_blueprint(flask_sse.sse, url_prefix="/stream")
    ch = "flask"
    cases = []

    def view():
        # What the /stream view writes: str() of each Message, in an app context.
        with app.app_context():
            for m in flask_sse.sse.messages(channel=ch):
                yield str(m)

    with app.app_context():
        raw = Tap(raw_payloads(url, ch))
        out = Tap(view)
        wait_subscribers(r, ch, 2)
        for call, args, kwargs in FLASK_PUBLISH:
            flask_sse.sse.publish(*args, channel=ch, **kwargs)
            cases.append({"lib": "flask-sse", "call": call, "payload": raw.next(), "frame": out.next()})
    return cases


if __name__ == "__main__":
    main()
