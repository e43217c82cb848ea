"""Publishing to ssehub: straight into its Redis, or through a hub over HTTP."""

import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from importlib import resources

DEFAULT_CHANNEL = "sse"
# The hub's defaults (ssehub.DefaultHistorySize, DefaultHistoryAge,
# DefaultMaxMessageBytes, redisbroker.DefaultPrefix). A publisher that writes
# into Redis must use the values its hubs use.
DEFAULT_HISTORY_SIZE = 1000
DEFAULT_HISTORY_AGE = 3600.0
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_PREFIX = "ssehub:"

MAX_CHANNEL_LEN = 200
MAX_ID_LEN = 256
MAX_TYPE_LEN = 256

_CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-.:@/]{1,%d}\Z" % MAX_CHANNEL_LEN)


class PublishError(Exception):
    """A message was not published.

    ``code`` is the hub's machine-readable reason (``invalid_channel``,
    ``too_large``, ``unauthorized``, ``unavailable``, ...), as in its JSON
    error answers; ``status`` the HTTP status, or None when no hub answered.
    An ``unavailable`` or ``timeout`` error may leave the event published
    all the same; every other one means it was not.
    """

    def __init__(self, code, message, status=None):
        super().__init__(message)
        self.code = code
        self.status = status


def _load_script():
    return resources.files(__package__).joinpath("publish.lua").read_text(encoding="utf-8")


def go_json_string(s):
    """Encode s as Go's encoding/json does, so that envelopes written from
    Python are byte for byte those the Go broker writes."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif c < 0x20 or ch in "<>&" or c in (0x2028, 0x2029):
            out.append("\\u%04x" % c)
        elif 0xD800 <= c <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _text(value, what):
    """An id or type as text: a string as it is, a number as str() writes it."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError("%s must be a string or a number, not %s" % (what, type(value).__name__))
    return value if isinstance(value, str) else str(value)


def _check_field(value, limit, code, what):
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise PublishError(code, "%s longer than %d bytes" % (what, limit))
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise PublishError(code, "%s is not valid UTF-8" % what)
    if any(c in value for c in "\r\n\x00"):
        raise PublishError(code, "%s %r holds CR, LF or NUL" % (what, value))


def _check_channel(channel):
    if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
        raise PublishError(
            "invalid_channel",
            "invalid channel %r: 1 to %d characters from A-Z a-z 0-9 _ - . : @ /" % (channel, MAX_CHANNEL_LEN),
        )


def _encode_data(data):
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # NaN or Infinity
        raise PublishError("invalid_data", "data: %s" % e) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: escaped, it is still one JSON value.
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("ascii")


class Publisher:
    """Publishes events to ssehub.

    ``url`` chooses how:

    - ``redis://`` or ``rediss://``: straight into the Redis the hubs use,
      with the publish script the Go broker runs (read from the same
      file), so ids, history, resume and envelopes are exactly those of an
      event published through a hub. ``history_size``, ``history_age``
      (seconds) and ``prefix`` must be those of the hubs. ``envelope`` is
      the shape of the message on the channel for Python readers of the
      same Redis, as the hubs' ``--redis-envelope``: "invenio" (the
      default) or "flask-sse".
    - ``http://`` or ``https://``: a POST to the hub's /publish, with
      ``token`` as a bearer token when given.

    A Publisher is safe to share between threads.
    """

    def __init__(self, url, token=None, timeout=10.0, history_size=DEFAULT_HISTORY_SIZE,
                 history_age=DEFAULT_HISTORY_AGE, prefix=DEFAULT_PREFIX,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, envelope="invenio"):
        if envelope not in ("invenio", "flask-sse"):
            raise ValueError("ssehub: envelope %r: use 'invenio' or 'flask-sse'" % (envelope,))
        self.envelope = envelope
        scheme = urllib.parse.urlsplit(url).scheme
        self.url = url
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        if scheme in ("redis", "rediss", "unix"):
            import redis

            self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self._script = self._redis.register_script(_load_script())
            self._size = int(history_size)
            self._age_us = int(history_age * 1_000_000) if history_age > 0 else 0
            self._prefix = prefix
            self._http = None
        elif scheme in ("http", "https"):
            self._redis = None
            self._http = url.rstrip("/") + "/publish"
            self._token = token
        else:
            raise ValueError("ssehub: url %r: use redis://, rediss:// or http(s)://" % url)

    def publish(self, data, type_=None, id_=None, retry=None, channel=DEFAULT_CHANNEL, **kwargs):
        """Publish data as a server-sent event and return the event's id.

        The signature is invenio-sse's ``publish``; flask-sse's keyword
        names ``type`` and ``id`` work too. ``data`` is any value json.dumps
        takes; ``type_`` sets the event's type; ``id_`` its id (a string or a
        number; none lets the hub assign one); ``retry`` the browser's
        reconnection time in milliseconds (a number or a numeric string,
        as invenio-sse's CLI passes it). False values set nothing, as in
        those libraries.
        """
        type_ = kwargs.pop("type", type_)
        id_ = kwargs.pop("id", id_)
        if kwargs:
            raise TypeError("publish() got unexpected keyword arguments %s" % ", ".join(sorted(kwargs)))
        channel = channel or DEFAULT_CHANNEL
        _check_channel(channel)
        typ = _text(type_, "type_") if type_ else ""
        _check_field(typ, MAX_TYPE_LEN, "invalid_type", "event type")
        if typ.startswith("ssehub."):
            raise PublishError("invalid_type", 'event type %r: the "ssehub." prefix is reserved' % typ)
        ident = _text(id_, "id_") if id_ else ""
        _check_field(ident, MAX_ID_LEN, "invalid_id", "id")
        ms = 0
        if retry:
            try:
                ms = int(retry)
            except (TypeError, ValueError):
                raise PublishError("invalid_retry", "retry %r is not a number of milliseconds" % (retry,)) from None
            if isinstance(retry, bool) or ms < 0 or (isinstance(retry, float) and retry != ms):
                raise PublishError("invalid_retry", "retry %r is not a number of milliseconds" % (retry,))
        body = _encode_data(data)
        if len(body) > self.max_message_bytes:
            raise PublishError("too_large", "%d bytes of data, limit %d" % (len(body), self.max_message_bytes))
        if self._redis is not None:
            return self._publish_redis(channel, body, typ, ident, ms)
        return self._publish_http(channel, body, typ, ident, ms)

    def envelope_head(self, body, typ, retry):
        """The start of the envelope, up to ``"id":``, as the Go broker writes it."""
        head = b'{"data":' + body + b',"event":'
        head += go_json_string(typ).encode("utf-8") if typ else b"null"
        head += b',"retry":' + (str(retry).encode() if retry else b"null") + b',"id":'
        return head

    def _publish_redis(self, channel, body, typ, ident, retry):
        import redis

        p = self._prefix
        keys = [p + "state", p + "active", p + "evicted", p + "stream:" + channel, p + "ids:" + channel]
        idjson = go_json_string(ident).encode("utf-8") if ident else b""
        args = [channel, self.envelope_head(body, typ, retry), idjson, ident, self._size, self._age_us, p]
        if self.envelope == "flask-sse":
            # flask-sse's message around the id: the script puts it on the
            # channel and the envelope on the channel's twin.
            tail = b""
            if retry:
                tail += b', "retry": ' + str(retry).encode()
            if typ:
                tail += b', "type": ' + go_json_string(typ).encode("utf-8")
            args += ["f", b'{"data": ' + body + b', "id": ', tail + b"}"]
        try:
            seq, _ = self._script(keys=keys, args=args)
        except redis.TimeoutError as e:
            raise PublishError("timeout", "Redis did not answer in time; the event may be published: %s" % e) from None
        except redis.RedisError as e:
            raise PublishError("unavailable", "publish on %r: %s" % (channel, e)) from None
        return ident or "%016d" % int(seq)

    def _publish_http(self, channel, body, typ, ident, retry):
        msg = b'{"channel":' + json.dumps(channel).encode() + b',"data":' + body
        if typ:
            msg += b',"type":' + json.dumps(typ, ensure_ascii=False).encode("utf-8")
        if ident:
            msg += b',"id":' + json.dumps(ident, ensure_ascii=False).encode("utf-8")
        if retry:
            msg += b',"retry":' + str(retry).encode()
        msg += b"}"
        headers = {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        req = urllib.request.Request(self._http, data=msg, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer = json.loads(resp.read(1 << 20))
                return answer["id"]
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read(1 << 20))
                code, text = err.get("code", "http_%d" % e.code), err.get("error", e.reason)
            except ValueError:
                code, text = "http_%d" % e.code, str(e.reason)
            raise PublishError(code, "the hub refused the message (%d): %s" % (e.code, text), e.code) from None
        except urllib.error.URLError as e:
            raise PublishError("unavailable", "cannot reach the hub at %s: %s" % (self.url, e.reason)) from None
        except (TimeoutError, OSError) as e:
            raise PublishError("timeout", "the hub at %s did not answer: %s" % (self.url, e)) from None

    def close(self):
        """Release the Redis connections, if any."""
        if self._redis is not None:
            self._redis.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
