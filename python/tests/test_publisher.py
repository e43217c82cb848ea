import json
import os
import time
import unittest

import support
from ssehub import Publisher, PublishError, mint_token
from ssehub.publisher import go_json_string, parse_cluster_url, parse_sentinel_url


def assert_refused(test, cases, form):
    """Each (url, why) of cases is refused with one line that says why and
    the form wanted, and does not show the password ("secret")."""
    for url, why in cases:
        with test.subTest(url=url):
            with test.assertRaises(ValueError) as cm:
                Publisher(url)
            msg = str(cm.exception)
            test.assertIn(why, msg)
            test.assertIn("want " + form, msg)
            test.assertNotIn("secret", msg)
            test.assertNotIn("\n", msg)


class RedisPublisherTest(unittest.TestCase):
    """Publisher("redis://...") against a real redis-server and hub."""

    @classmethod
    def setUpClass(cls):
        cls.redis = support.RedisServer()
        cls.hub = support.Hub("--broker", cls.redis.url)

    @classmethod
    def tearDownClass(cls):
        cls.hub.close()
        cls.redis.close()

    def test_resume_from_returned_id(self):
        """A stream resumes exactly after an id the Publisher returned: the
        events after it, in order, and no reset."""
        with Publisher(self.redis.url) as pub:
            first = pub.publish({"n": 1}, channel="resume")
            self.assertRegex(first, r"^\d{16}$")
            later = [
                pub.publish({"n": 2}, type_="cool", channel="resume"),
                pub.publish("two\nlines", id_=12345, retry=6000, channel="resume"),
                pub.publish([1.5, None, "é<&>"], type="flask-style", id="a-1", channel="resume"),
            ]
        self.assertEqual(later[1:], ["12345", "a-1"])
        s = support.Stream(self.hub.url, "resume", last_event_id=first)
        try:
            self.assertEqual(s.next(), ("cool", '{"n":2}', later[0]))
            self.assertEqual(s.next(), ("message", '"two\\nlines"', "12345"))
            self.assertEqual(s.next(), ("flask-style", '[1.5,null,"é<&>"]', "a-1"))
        finally:
            s.close()

    def test_live_and_envelope(self):
        """A live stream gets the event; the envelope in Redis is the one
        the Go broker writes, which invenio-sse's reader understands."""
        s = support.Stream(self.hub.url, "live")
        ps = self.redis.client.pubsub()
        ps.subscribe("live")
        try:
            ps.get_message(timeout=support.WAIT)  # the subscription's confirmation
            with Publisher(self.redis.url) as pub:
                ident = pub.publish({"code": "ACK"}, type_="cool", retry="6000", channel="live")
            self.assertEqual(s.next(), ("cool", '{"code":"ACK"}', ident))
            msg = ps.get_message(timeout=support.WAIT)
            env = json.loads(msg["data"])
            self.assertEqual(env["data"], {"code": "ACK"})
            self.assertEqual((env["event"], env["id"], env["retry"]), ("cool", ident, 6000))
            self.assertEqual(env["ssehub_seq"], int(ident))
            self.assertTrue(msg["data"].startswith(b'{"data":{"code":"ACK"},"event":"cool","retry":6000,"id":"'))
        finally:
            ps.close()
            s.close()

    def test_flask_sse_envelope(self):
        """envelope="flask-sse": flask-sse's message on the channel, with no
        key its reader refuses, and the event once on a hub's stream."""
        s = support.Stream(self.hub.url, "flask")
        ps = self.redis.client.pubsub()
        ps.subscribe("flask")
        try:
            ps.get_message(timeout=support.WAIT)
            with Publisher(self.redis.url, envelope="flask-sse") as pub:
                ident = pub.publish({"b": 1}, type="greeting", retry=500, channel="flask")
                later = pub.publish("x", channel="flask")
            msg = ps.get_message(timeout=support.WAIT)
            self.assertEqual(msg["data"], ('{"data": {"b":1}, "id": "%s", "retry": 500, "type": "greeting"}' % ident).encode())
            self.assertEqual(s.next(), ("greeting", '{"b":1}', ident))
            self.assertEqual(s.next(), ("message", '"x"', later))
        finally:
            ps.close()
            s.close()
        with self.assertRaises(ValueError):
            Publisher(self.redis.url, envelope="other")

    def test_idempotency_key(self):
        """The same key publishes once and answers the same id, over Redis
        and over HTTP; the key with another message is refused."""
        with Publisher(self.redis.url) as pub:
            first = pub.publish({"n": 1}, channel="idem", idempotency_key="order-7")
            self.assertEqual(pub.publish({"n": 1}, channel="idem", idempotency_key="order-7"), first)
            with self.assertRaises(PublishError) as cm:
                pub.publish({"n": 2}, channel="idem", idempotency_key="order-7")
            self.assertEqual((cm.exception.code, cm.exception.status), ("idempotency_key_reused", 422))
            with self.assertRaises(PublishError) as cm:
                pub.publish(1, channel="idem", idempotency_key="has space")
            self.assertEqual(cm.exception.code, "invalid_idempotency_key")
        over_http = Publisher(self.hub.url)
        second = over_http.publish("x", channel="idem", idempotency_key="order-8")
        self.assertEqual(over_http.publish("x", channel="idem", idempotency_key="order-8"), second)
        self.assertEqual(self.redis.client.xlen("ssehub:stream:idem"), 2)

    def test_frozen_redis(self):
        """Redis stops answering mid-publish: the Publisher says the outcome
        is unknown, and sending the message again with its key, once Redis
        answers, publishes it once."""
        import signal

        with Publisher(self.redis.url, timeout=0.5) as pub:
            pub.publish("warm-up", channel="frozen")  # the connection is made
            os.kill(self.redis.proc.pid, signal.SIGSTOP)
            try:
                with self.assertRaises(PublishError) as cm:
                    pub.publish({"n": 1}, channel="frozen", idempotency_key="k-frozen")
            finally:
                os.kill(self.redis.proc.pid, signal.SIGCONT)
            self.assertEqual((cm.exception.code, cm.exception.status), ("publish_outcome_unknown", 504))
            first = pub.publish({"n": 1}, channel="frozen", idempotency_key="k-frozen")
            self.assertEqual(pub.publish({"n": 1}, channel="frozen", idempotency_key="k-frozen"), first)
        self.assertEqual(self.redis.client.xlen("ssehub:stream:frozen"), 2)

    def test_wait_replicas(self):
        """With no replica to confirm it, a publish that waits for one is
        published, and raises publish_outcome_unknown with its id; sent
        again with its key, it is not published twice."""
        with Publisher(self.redis.url, wait_replicas=1, wait_timeout=0.05) as pub:
            for _ in range(2):
                with self.assertRaises(PublishError) as cm:
                    pub.publish({"n": 1}, channel="wait", idempotency_key="k-wait")
                e = cm.exception
                self.assertEqual((e.code, e.status), ("publish_outcome_unknown", 504))
                self.assertIn("published, but only 0 of 1 replicas confirmed it within 50ms", str(e))
                self.assertRegex(e.id, r"^\d{16}$")
                self.assertEqual(self.redis.client.xrange("ssehub:stream:wait")[-1][0].decode().split("-")[0],
                                 str(int(e.id)))
            with self.assertRaises(PublishError) as cm:
                pub.publish(1, channel="wait", id_="own-id")
            self.assertEqual((cm.exception.code, cm.exception.id), ("publish_outcome_unknown", "own-id"))
        self.assertEqual(self.redis.client.xlen("ssehub:stream:wait"), 2)

    def test_wait_answer_lost(self):
        """The connection breaks while WAIT waits: the event is published,
        but unconfirmed, and the error says so with its id."""
        import threading

        def kill_waiting():
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for c in self.redis.client.client_list():
                    if c.get("cmd") == "wait":
                        self.redis.client.client_kill_filter(_id=c["id"])
                        return
                time.sleep(0.005)
            raise AssertionError("no client waited")

        with Publisher(self.redis.url, wait_replicas=1, wait_timeout=5) as pub:
            killer = threading.Thread(target=kill_waiting)
            killer.start()
            try:
                with self.assertRaises(PublishError) as cm:
                    pub.publish({"n": 1}, channel="wait-lost", idempotency_key="k-lost")
            finally:
                killer.join()
            e = cm.exception
            self.assertEqual((e.code, e.status), ("publish_outcome_unknown", 504))
            self.assertIn("published, but the replicas' confirmation did not come", str(e))
            self.assertRegex(e.id, r"^\d{16}$")
        self.assertEqual(self.redis.client.xlen("ssehub:stream:wait-lost"), 1)

    def test_history_bounds(self):
        """history_size trims the channel's stream as the hubs do."""
        with Publisher(self.redis.url, history_size=3) as pub:
            for n in range(5):
                pub.publish(n, channel="bounded")
        self.assertEqual(self.redis.client.xlen("ssehub:stream:bounded"), 3)

    def test_invalid(self):
        with Publisher(self.redis.url, max_message_bytes=100) as pub:
            cases = [
                (dict(data=1, channel="a b"), "invalid_channel"),
                (dict(data=1, channel="a.*"), "invalid_channel"),
                (dict(data=1, type_="a\nb"), "invalid_type"),
                (dict(data=1, type_="ssehub.reset"), "invalid_type"),
                (dict(data=1, id_="x" * 257), "invalid_id"),
                (dict(data=1, id_="a\x00"), "invalid_id"),
                (dict(data=1, retry=-1), "invalid_retry"),
                (dict(data=1, retry="soon"), "invalid_retry"),
                (dict(data=1, retry=1.5), "invalid_retry"),
                (dict(data=float("nan")), "invalid_data"),
                (dict(data="x" * 200), "too_large"),
            ]
            for kwargs, code in cases:
                with self.subTest(kwargs=kwargs):
                    with self.assertRaises(PublishError) as cm:
                        pub.publish(**kwargs)
                    self.assertEqual(cm.exception.code, code)
            with self.assertRaises(TypeError):
                pub.publish(1, id_=True)
            with self.assertRaises(TypeError):
                pub.publish(1, channels="x")
        self.assertEqual(self.redis.client.xlen("ssehub:stream:sse"), 0)

    def test_redis_down(self):
        port = support.free_port()
        with Publisher("redis://127.0.0.1:%d/0" % port, timeout=2) as pub:
            with self.assertRaises(PublishError) as cm:
                pub.publish(1)
        self.assertEqual(cm.exception.code, "unavailable")


class HTTPPublisherTest(unittest.TestCase):
    """Publisher("http://...") against a real hub with JWTs on."""

    SECRET = b"0123456789abcdef0123456789abcdef"

    @classmethod
    def setUpClass(cls):
        import tempfile

        f = tempfile.NamedTemporaryFile(delete=False)
        f.write(cls.SECRET + b"\n")
        f.close()
        cls.secret_file = f.name
        cls.hub = support.Hub("--jwt-secret-file", f.name, "--public", "*")

    @classmethod
    def tearDownClass(cls):
        cls.hub.close()

    def test_publish_with_minted_token(self):
        token = mint_token(self.SECRET, subject="app", publish=["news.*"])
        s = support.Stream(self.hub.url, "news.eu")
        try:
            pub = Publisher(self.hub.url, token=token)
            ident = pub.publish({"n": 1}, type_="cool", id_=7, retry=3000, channel="news.eu")
            self.assertEqual(ident, "7")
            self.assertEqual(s.next(), ("cool", '{"n":1}', "7"))
            auto = pub.publish("x", channel="news.eu")
            self.assertRegex(auto, r"^\d{16}$")
            self.assertEqual(s.next(), ("message", '"x"', auto))
        finally:
            s.close()

    def test_refusals(self):
        good = mint_token(self.SECRET, publish=["news.*"])
        cases = [
            (None, "news.eu", 401, "unauthorized"),
            (mint_token(b"another secret, 32 bytes or more", publish=["*"]), "news.eu", 401, "unauthorized"),
            (mint_token(self.SECRET, publish=["news.*"], now=0), "news.eu", 401, "unauthorized"),
            (good, "orders", 403, "forbidden"),
        ]
        for token, channel, status, code in cases:
            with self.subTest(channel=channel, status=status):
                with self.assertRaises(PublishError) as cm:
                    Publisher(self.hub.url, token=token).publish(1, channel=channel)
                self.assertEqual((cm.exception.status, cm.exception.code), (status, code))

    def test_unreachable(self):
        with self.assertRaises(PublishError) as cm:
            Publisher("http://127.0.0.1:%d" % support.free_port(), timeout=2).publish(1)
        self.assertEqual((cm.exception.code, cm.exception.status), ("unavailable", None))


class ClusterURLTest(unittest.TestCase):
    """Publisher("redis-cluster://...") reads the URL `ssehub serve --broker`
    takes, and refuses what cannot work on a cluster, before any server is
    asked."""

    def test_parse(self):
        cases = [
            ("redis-cluster://127.0.0.1:7001,127.0.0.1:7002", [("127.0.0.1", 7001), ("127.0.0.1", 7002)], {}),
            ("redis-cluster://app:p%40ss@h:7001/?dial_timeout=3s&read_timeout=1m30s", [("h", 7001)],
             dict(username="app", password="p@ss", socket_connect_timeout=3.0, socket_timeout=90.0)),
            ("redis-cluster://:secret@[::1]:7001?read_timeout=250ms", [("::1", 7001)],
             dict(password="secret", socket_timeout=0.25)),
            ("redis-cluster://h:7001?dial_timeout=2", [("h", 7001)], dict(socket_connect_timeout=2.0)),
        ]
        for url, nodes, options in cases:
            with self.subTest(url=url):
                self.assertEqual(parse_cluster_url(url), (nodes, options))

    def test_bad_urls(self):
        cases = [
            ("redis-cluster://", "'' is not HOST:PORT"),
            ("redis-cluster://h", "'h' is not HOST:PORT"),
            ("redis-cluster://h:7001,", "'' is not HOST:PORT"),
            ("redis-cluster://h:70010", "'h:70010' is not HOST:PORT"),
            ("redis-cluster://h:7001/0", "a cluster has no database number"),
            ("redis-cluster://app:s%zzret@h:7001", "the user or password is not URL-encoded"),
            ("redis-cluster://app:secret@h:7001?pool_size=3", "query parameter 'pool_size'"),
            ("redis-cluster://h:7001?dial_timeout=soon", "dial_timeout=soon is not a duration"),
            ("redis-cluster://h:7001?read_timeout=0s", "read_timeout=0s is not a duration"),
        ]
        assert_refused(self, cases, "redis-cluster://[user:password@]HOST:PORT[,HOST:PORT...]")

    def test_refusals(self):
        with self.assertRaisesRegex(ValueError, "flask-sse.*sharded channels"):
            Publisher("redis-cluster://127.0.0.1:7001", envelope="flask-sse")
        for prefix in ("{app}:", "app}"):
            with self.subTest(prefix=prefix):
                with self.assertRaisesRegex(ValueError, "hash tag"):
                    Publisher("redis-cluster://127.0.0.1:7001", prefix=prefix)
        with self.assertRaisesRegex(ValueError, "redis-cluster://"):
            Publisher("redis-clusters://127.0.0.1:7001")

    def test_unreachable(self):
        """No node answers: not published, said at once."""
        with Publisher("redis-cluster://127.0.0.1:%d,127.0.0.1:%d" % (support.free_port(), support.free_port()),
                       timeout=2) as pub:
            for _ in range(2):
                with self.assertRaises(PublishError) as cm:
                    pub.publish(1)
                self.assertEqual((cm.exception.code, cm.exception.status), ("unavailable", None))


class WaitReplicasArgumentsTest(unittest.TestCase):
    """wait_replicas and wait_timeout as Publisher takes them: no server is
    asked."""

    def test_refusals(self):
        for url in ("redis://127.0.0.1:1/0", "redis-cluster://127.0.0.1:1",
                    "redis-sentinel://127.0.0.1:1/mymaster"):
            with self.subTest(url=url):
                with self.assertRaisesRegex(ValueError, "wait_replicas -1"):
                    Publisher(url, wait_replicas=-1)
                with self.assertRaisesRegex(ValueError, "wait_replicas"):
                    Publisher(url, wait_replicas=1.5)
                with self.assertRaisesRegex(ValueError, "wait_timeout -1"):
                    Publisher(url, wait_replicas=1, wait_timeout=-1)
                with self.assertRaisesRegex(ValueError, "wait_timeout -1"):
                    Publisher(url, wait_timeout=-1)
                with self.assertRaisesRegex(ValueError, r"0.001 \(1 ms\) or more"):
                    Publisher(url, wait_replicas=1, wait_timeout=0)
                with self.assertRaisesRegex(ValueError, "less than the read timeout, 2 s"):
                    Publisher(url, timeout=2, wait_replicas=1, wait_timeout=2)
                Publisher(url, wait_replicas=2, wait_timeout=0.5).close()
                Publisher(url, wait_timeout=30).close()  # not waiting: no bound
        with self.assertRaisesRegex(ValueError, "less than the read timeout, 0.5 s"):
            Publisher("redis-sentinel://127.0.0.1:1/mymaster?read_timeout=500ms", wait_replicas=1)
        with self.assertRaisesRegex(ValueError, "wait_replicas is for a Redis URL"):
            Publisher("http://127.0.0.1:1", wait_replicas=1)
        Publisher("http://127.0.0.1:1", wait_replicas=0)


class SentinelURLTest(unittest.TestCase):
    """Publisher("redis-sentinel://...") reads the URL `ssehub serve
    --broker` takes, with the same refusals, before any server is asked."""

    def test_parse(self):
        cases = [
            ("redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
             [("127.0.0.1", 26379), ("127.0.0.1", 26380)], "mymaster", {}, {}),
            ("redis-sentinel://app:p%40ss@h:26379/my%20master?db=2&sentinel_username=s&sentinel_password=sp",
             [("h", 26379)], "my master", dict(username="app", password="p@ss", db=2),
             dict(username="s", password="sp")),
            ("redis-sentinel://:secret@[::1]:26379/m?password=other&dial_timeout=500ms&read_timeout=1m30s",
             [("::1", 26379)], "m", dict(password="other", socket_connect_timeout=0.5, socket_timeout=90.0), {}),
            # redis-py has one socket timeout for both ways: the longer.
            ("redis-sentinel://h:26379/m?read_timeout=1s&write_timeout=3s&db=1&db=0", [("h", 26379)], "m",
             dict(db=0, socket_timeout=3.0), {}),
        ]
        for url, sentinels, master, options, sentinel_options in cases:
            with self.subTest(url=url):
                self.assertEqual(parse_sentinel_url(url), (sentinels, master, options, sentinel_options))

    def test_bad_urls(self):
        cases = [
            ("redis-sentinel:///m", "no sentinel HOST:PORT"),
            ("redis-sentinel://h/m", "sentinel 'h' is not HOST:PORT"),
            ("redis-sentinel://h:26379,/m", "sentinel '' is not HOST:PORT"),
            ("redis-sentinel://h:263790/m", "sentinel 'h:263790' is not HOST:PORT"),
            ("redis-sentinel://h:26379", "no master name"),
            ("redis-sentinel://h:26379/", "no master name"),
            ("redis-sentinel://h:26379/a/b", "no master name"),
            ("redis-sentinel://h:26379/m?db=x", "invalid database 'x'"),
            ("redis-sentinel://h:26379/m?db=-1", "invalid database '-1'"),
            ("redis-sentinel://app:secret@h:26379/m?pool_size=3", "unknown parameter 'pool_size' (use db, password,"),
            ("redis-sentinel://h:26379/m?password=secret&dial_timeout=soon", "dial_timeout 'soon' is not a duration"),
            ("redis-sentinel://h:26379/m?sentinel_password=secret&read_timeout=0s", "read_timeout '0s' is not a"),
            # Go's durations have a unit.
            ("redis-sentinel://h:26379/m?write_timeout=3", "write_timeout '3' is not a duration"),
            ("redis-sentinel://app:s%zzret@h:26379/m", "the user part of the Sentinel URL is not valid"),
            ("redis-sentinel://h:26379/m?password=s%zzret", "the query of the Sentinel URL is not valid"),
        ]
        assert_refused(self, cases, "redis-sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/MASTER_NAME")
        with self.assertRaisesRegex(ValueError, "redis-sentinel://"):
            Publisher("redis-sentinels://127.0.0.1:26379/m")

    def test_unreachable(self):
        """No sentinel answers: no master found, not published, said at
        once, each time."""
        url = "redis-sentinel://127.0.0.1:%d,127.0.0.1:%d/m" % (support.free_port(), support.free_port())
        with Publisher(url, timeout=2) as pub:
            for _ in range(2):
                with self.assertRaises(PublishError) as cm:
                    pub.publish(1, idempotency_key="k")
                self.assertEqual((cm.exception.code, cm.exception.status), ("unavailable", None))
                self.assertIn("No master found for 'm'", str(cm.exception))


class TokenTest(unittest.TestCase):
    def test_claims(self):
        import base64

        tok = mint_token("s" * 32, subject="user-42", subscribe=["user.42"], ttl=60, audience="hub", issuer="app", now=1000)
        header, payload, _ = tok.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        self.assertEqual(claims, {"subscribe": ["user.42"], "iss": "app", "sub": "user-42", "aud": ["hub"], "exp": 1060, "iat": 1000})
        self.assertEqual(json.loads(base64.urlsafe_b64decode(header + "==")), {"alg": "HS256", "typ": "JWT"})

    def test_refuses_weak_input(self):
        for kwargs in (dict(secret="short"), dict(secret="s" * 32, ttl=0), dict(secret="s" * 32, publish=[""])):
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(ValueError):
                    mint_token(**kwargs)


class GoJSONTest(unittest.TestCase):
    def test_escapes(self):
        self.assertEqual(go_json_string('a"\\\n\r\t\b\f\x01<>&\u2028\u2029é\ud800'),
                         '"a\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u003c\\u003e\\u0026\\u2028\\u2029é\\ufffd"')


if __name__ == "__main__":
    unittest.main()
