import unittest

import support

try:
    import flask
except ImportError:  # pragma: no cover
    flask = None


@unittest.skipIf(flask is None and __import__("os").environ.get("CI") != "true", "Flask is not installed")
class FlaskExtensionTest(unittest.TestCase):
    """ssehub.flask in place of invenio-sse and flask-sse, against a real
    redis-server and hub."""

    @classmethod
    def setUpClass(cls):
        cls.redis = support.RedisServer()
        cls.hub = support.Hub("--broker", cls.redis.url)

    @classmethod
    def tearDownClass(cls):
        cls.hub.close()
        cls.redis.close()

    def test_invenio_app(self):
        """An invenio-sse app that changed its import: SSE_REDIS_URL,
        SSEHub(app), current_sse.publish with invenio-sse's arguments."""
        from ssehub.flask import SSEHub as InvenioSSE, current_sse

        app = flask.Flask("invenio_app")
        app.config["SSE_REDIS_URL"] = self.redis.url
        ext = InvenioSSE(app)
        s = support.Stream(self.hub.url, "cool_channel")
        try:
            with app.app_context():
                ident = current_sse.publish({"code": "ACK", "msg": "cool message"}, type_="cool", id_=12345,
                                            retry=6000, channel="cool_channel")
                self.assertEqual(ident, "12345")
                auto = ext.publish("plain", channel="cool_channel")
            self.assertEqual(s.next(), ("cool", '{"code":"ACK","msg":"cool message"}', "12345"))
            self.assertEqual(s.next(), ("message", '"plain"', auto))
        finally:
            s.close()

    def test_flask_sse_app(self):
        """A flask-sse app that changed its import: REDIS_URL, the sse
        blueprint registered, sse.publish with flask-sse's arguments."""
        from ssehub.flask import sse

        app = flask.Flask("flask_sse_app")
        app.config["REDIS_URL"] = self.redis.url
        app.register_blueprint(sse, url_prefix="/stream")
        s = support.Stream(self.hub.url, "sse")
        try:
            with app.app_context():
                ident = sse.publish({"message": "Hello!"}, type="greeting")
            self.assertEqual(s.next(), ("greeting", '{"message":"Hello!"}', ident))
        finally:
            s.close()

    def test_through_the_hub(self):
        """With SSEHUB_URL the extension publishes over HTTP."""
        from ssehub.flask import SSEHub, current_sse

        app = flask.Flask("http_app")
        app.config["SSEHUB_URL"] = self.hub.url
        SSEHub(app)
        s = support.Stream(self.hub.url, "over-http")
        try:
            with app.app_context():
                ident = current_sse.publish([1, 2], channel="over-http")
            self.assertEqual(s.next(), ("message", "[1,2]", ident))
        finally:
            s.close()

    def test_wait_replicas(self):
        """SSEHUB_REDIS_WAIT_REPLICAS makes each publish wait for replicas:
        this Redis has none, so the event is published and the error says
        so, with its id, after SSEHUB_REDIS_WAIT_TIMEOUT."""
        from ssehub import PublishError
        from ssehub.flask import SSEHub, current_sse

        app = flask.Flask("wait_app")
        app.config.update(SSE_REDIS_URL=self.redis.url, SSEHUB_REDIS_WAIT_REPLICAS=1, SSEHUB_REDIS_WAIT_TIMEOUT=0.1)
        SSEHub(app)
        s = support.Stream(self.hub.url, "waited")
        try:
            with app.app_context(), self.assertRaises(PublishError) as cm:
                current_sse.publish("w", channel="waited")
            e = cm.exception
            self.assertEqual((e.code, e.status), ("publish_outcome_unknown", 504))
            self.assertIn("only 0 of 1 replicas", str(e))
            self.assertEqual(s.next(), ("message", '"w"', e.id))
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
