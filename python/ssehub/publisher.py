"""Publishing to ssehub: straight into its Redis, or through a hub over HTTP."""

import base64
import hashlib
import json
import logging
import os
import re
import threading
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
DEFAULT_HISTORY_BYTES = 256 << 20
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_PREFIX = "ssehub:"
# How long Redis remembers an idempotency key (ssehub.DefaultIdempotencyWindow),
# one made for a publish that came without one (the Go broker's
# generatedKeyWindow), and how many keys at most (DefaultMaxIdempotencyKeys).
DEFAULT_IDEMPOTENCY_WINDOW = 300.0
GENERATED_KEY_WINDOW = 30.0
DEFAULT_MAX_IDEMPOTENCY_KEYS = 250_000
MAX_IDEMPOTENCY_KEY_LEN = 128

MAX_CHANNEL_LEN = 200
MAX_ID_LEN = 256
MAX_TYPE_LEN = 256

_CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-.:@/]{1,%d}\Z" % MAX_CHANNEL_LEN)

# A URL naming the nodes of a Redis Cluster, as `ssehub serve --broker` takes it.
CLUSTER_SCHEME = "redis-cluster://"
_CLUSTER_FORM = "redis-cluster://[user:password@]HOST:PORT[,HOST:PORT...]"
# How many MOVED or ASK redirections a publish follows, as go-redis's
# ClusterOptions.MaxRedirects.
_MAX_REDIRECTS = 3
# A URL naming the sentinels of a Redis master, as `ssehub serve --broker`
# takes it.
SENTINEL_SCHEME = "redis-sentinel://"
_SENTINEL_FORM = ("redis-sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/MASTER_NAME"
                  "[?db=N&password=...&sentinel_password=...]")
_SENTINEL_PARAMS = ("db", "password", "sentinel_username", "sentinel_password", "dial_timeout", "read_timeout",
                    "write_timeout")
# A % not followed by two hex digits: the text is not URL-encoded.
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DURATION_RE = re.compile(r"((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|\u00b5s|ms|s|m|h))+\Z")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class PublishError(Exception):
    """A message was not published.

    ``code`` is the hub's machine-readable reason (``invalid_channel``,
    ``too_large``, ``unauthorized``, ``unavailable``, ...), as in its JSON
    error answers; ``status`` the HTTP status, or None when no hub answered.
    An ``unavailable`` or ``timeout`` error may leave the event published
    all the same; every other one means it was not. A
    ``publish_outcome_unknown`` error from a Publisher that waits for
    replicas (``wait_replicas``) whose event was published has its id in
    ``id``: sent again with the same idempotency key, the message is not
    published twice, and the Publisher waits for the replicas again.
    """

    def __init__(self, code, message, status=None, id=None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.id = id


def _load_script(name):
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _token(n):
    return base64.urlsafe_b64encode(os.urandom(n)).rstrip(b"=").decode("ascii")


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


def _split_host_port(addr):
    """HOST:PORT or [IPv6]:PORT as (host, port), or None."""
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if not sep:
            return None
    else:
        host, sep, port = addr.rpartition(":")
        if not sep or ":" in host:
            return None
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _duration(value, bare_seconds=True):
    """A go-redis timeout in seconds: a Go duration such as 500ms or 1m30s,
    or, when bare_seconds, a whole number of seconds, as go-redis's URL
    parsers take it. None when value is neither."""
    if bare_seconds and value.isdigit():
        return float(value)
    if not _DURATION_RE.match(value):
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(value))


def parse_cluster_url(url):
    """Read a redis-cluster:// URL as ``ssehub serve --broker`` does.

    Returns the nodes as (host, port) pairs and a dict of redis-py client
    options: ``username`` and ``password`` when the URL has them, and the
    timeouts its ``dial_timeout`` and ``read_timeout`` parameters set.
    Raises ValueError, with the password left out of the message, on a URL
    of another form.
    """
    rest = url[len(CLUSTER_SCHEME):] if url.startswith(CLUSTER_SCHEME) else None
    if rest is None:
        raise ValueError("ssehub: url %r: want %s" % (url, _CLUSTER_FORM))
    userinfo, at, hosts = rest.rpartition("@")
    cut = min((i for i in (hosts.find("/"), hosts.find("?")) if i >= 0), default=len(hosts))
    hosts, query = hosts[:cut], hosts[cut:]
    shown = CLUSTER_SCHEME
    if at:
        user, colon, _ = userinfo.partition(":")
        shown += (user + ":xxxxx@") if colon else (userinfo + "@")
    shown += hosts + query

    def bad(why):
        return ValueError("ssehub: url %r: %s; want %s" % (shown, why, _CLUSTER_FORM))

    path, _, q = query.partition("?")
    if path not in ("", "/"):
        raise bad("a cluster has no database number")
    nodes = []
    for addr in hosts.split(","):
        node = _split_host_port(addr)
        if node is None:
            raise bad("%r is not HOST:PORT" % addr)
        nodes.append(node)
    options = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if _BAD_ESCAPE_RE.search(userinfo):
            raise bad("the user or password is not URL-encoded")
        if user:
            options["username"] = urllib.parse.unquote(user)
        if colon:
            options["password"] = urllib.parse.unquote(password)
    timeouts = {"dial_timeout": "socket_connect_timeout", "read_timeout": "socket_timeout"}
    for name, value in urllib.parse.parse_qsl(q, keep_blank_values=True):
        if name not in timeouts:
            raise bad("query parameter %r: the Python publisher takes only dial_timeout and read_timeout" % name)
        seconds = _duration(value)
        if not seconds:
            raise bad("%s=%s is not a duration such as 3s or 500ms" % (name, value))
        options[timeouts[name]] = seconds
    return nodes, options


def parse_sentinel_url(url):
    """Read a redis-sentinel:// URL as ``ssehub serve --broker`` does.

    Returns the sentinels as (host, port) pairs, the master's name, a dict
    of redis-py options for the master (``username``, ``password``, ``db``
    and the timeouts, when the URL sets them) and one for the sentinels
    (``username`` and ``password`` from ``sentinel_username`` and
    ``sentinel_password``). Raises ValueError, with the passwords left out
    of the message, on a URL of another form.
    """
    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError("ssehub: url %r: want %s" % (url, _SENTINEL_FORM))
    rest, _, query = url[len(SENTINEL_SCHEME):].partition("?")
    hosts, _, name = rest.partition("/")
    userinfo, _, hosts = hosts.rpartition("@")
    options, sentinel_options = {}, {}
    if userinfo:
        if _BAD_ESCAPE_RE.search(userinfo):
            raise ValueError("ssehub: url: the user part of the Sentinel URL is not valid; want %s" % _SENTINEL_FORM)
        user, colon, password = userinfo.partition(":")
        if user:
            options["username"] = urllib.parse.unquote(user)
        if password:
            options["password"] = urllib.parse.unquote(password)
    if _BAD_ESCAPE_RE.search(query) or ";" in query:
        raise ValueError("ssehub: url: the query of the Sentinel URL is not valid; want %s" % _SENTINEL_FORM)
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    # The URL as messages show it: passwords replaced.
    shown = SENTINEL_SCHEME
    if options:
        shown += userinfo.partition(":")[0] + (":xxxxx" if "password" in options else "") + "@"
    shown += hosts + "/" + name
    shown_query = {}
    for k, v in params:
        shown_query.setdefault(k, []).append("xxxxx" if k.endswith("password") else v)
    if shown_query:
        shown += "?" + urllib.parse.urlencode(sorted(shown_query.items()), doseq=True)

    def bad(why):
        return ValueError("ssehub: url %r: %s; want %s" % (shown, why, _SENTINEL_FORM))

    if not hosts:
        raise bad("no sentinel HOST:PORT")
    sentinels = []
    for addr in hosts.split(","):
        sentinel = _split_host_port(addr)
        if sentinel is None:
            raise bad("sentinel %r is not HOST:PORT" % addr)
        sentinels.append(sentinel)
    master = urllib.parse.unquote(name)
    if _BAD_ESCAPE_RE.search(name) or not master or "/" in master:
        raise bad("no master name")
    timeouts = {}
    for k, v in dict(params).items():  # the last value of each, as Go takes it
        if k == "db":
            if not re.fullmatch(r"[0-9]+", v):
                raise bad("invalid database %r" % v)
            options["db"] = int(v)
        elif k == "password":
            options["password"] = v
        elif k in ("sentinel_username", "sentinel_password"):
            sentinel_options[k[len("sentinel_"):]] = v
        elif k in ("dial_timeout", "read_timeout", "write_timeout"):
            seconds = _duration(v, bare_seconds=False)
            if not seconds:
                raise bad("%s %r is not a duration such as 3s" % (k, v))
            timeouts[k] = seconds
        else:
            raise bad("unknown parameter %r (use %s or %s)" % (k, ", ".join(_SENTINEL_PARAMS[:-1]),
                                                                _SENTINEL_PARAMS[-1]))
    if "dial_timeout" in timeouts:
        options["socket_connect_timeout"] = timeouts["dial_timeout"]
    # redis-py has one timeout for sending and for waiting for the answer:
    # the longer of the two the URL sets.
    if "read_timeout" in timeouts or "write_timeout" in timeouts:
        options["socket_timeout"] = max(timeouts.get("read_timeout", 0), timeouts.get("write_timeout", 0))
    return sentinels, master, options, sentinel_options


def _refused(err):
    """Whether an error reply says the script did not run: on a cluster,
    the slot is elsewhere or unserved; on a cluster or under Sentinel, the
    node cannot take writes now (it was made a replica, or is loading)."""
    import redis.exceptions as rx

    if isinstance(err, (rx.ClusterDownError, rx.TryAgainError, rx.AskError, rx.ReadOnlyError,
                        rx.BusyLoadingError, rx.ClusterCrossSlotError)):
        return True
    code = str(err).split(" ", 1)[0]
    return code in ("CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "LOADING", "READONLY", "MASTERDOWN")


def _error_text(err):
    """err as Redis said it: redis-py leaves the code out of the message of
    the errors it has a class for."""
    import redis.exceptions as rx

    codes = [(rx.MovedError, "MOVED"), (rx.AskError, "ASK"), (rx.TryAgainError, "TRYAGAIN"),
             (rx.MasterDownError, "MASTERDOWN"), (rx.ClusterDownError, "CLUSTERDOWN"),
             (rx.ReadOnlyError, "READONLY"), (rx.BusyLoadingError, "LOADING"), (rx.ClusterCrossSlotError, "CROSSSLOT")]
    text = str(err).strip()
    for cls, code in codes:
        if isinstance(err, cls):
            return text if text.startswith(code) else "%s %s" % (code, text)
    return text


class _NotRun(Exception):
    """The script did not run: no connection, or Redis refused it."""

    def __init__(self, cause):
        super().__init__(_error_text(cause))
        self.cause = cause


class _Script:
    def __init__(self, name):
        self.text = _load_script(name)
        self.sha = hashlib.sha1(self.text.encode("utf-8")).hexdigest()


def _go_duration(seconds):
    """seconds as Go's time.Duration writes it, for the durations a
    Publisher takes: 300ms, 1s, 1.5s."""
    if seconds < 1:
        return "%gms" % round(seconds * 1000, 6)
    return "%gs" % round(seconds, 9)


def _published(answer):
    """Whether the publish script's answer says the event is published,
    now or by an earlier publish with the same idempotency key."""
    return isinstance(answer, list) and len(answer) == 3 and answer[2] in (0, 1) and bool(answer[0])


def _send(client, script, keys, args, asking=False, wait=None):
    """Send script on a connection of client's pool, once, and return its
    answer. Raises _NotRun when no connection could be made or Redis is
    still loading its data, redis-py's ConnectionError or TimeoutError when
    the answer was lost, and ResponseError for an error reply.

    With wait, a pair (replicas, timeout in milliseconds), a publish whose
    answer says published is followed by WAIT on the same connection, as
    WAIT counts the replicas that hold the writes of its own connection;
    the answer is then a pair: the script's, and the number of replicas
    WAIT counted, or the exception that took WAIT's answer."""
    import redis.exceptions as rx

    pool = client.connection_pool
    try:
        conn = pool.get_connection("EVALSHA")
    except (rx.ConnectionError, rx.TimeoutError) as e:
        raise _NotRun(e) from None
    try:
        for command, body in (("EVALSHA", script.sha), ("EVAL", script.text)):
            if asking:
                try:
                    conn.send_command("ASKING")
                    client.parse_response(conn, "ASKING")
                except (rx.ConnectionError, rx.TimeoutError) as e:
                    conn.disconnect()
                    raise _NotRun(e) from None
            try:
                conn.send_command(command, body, len(keys), *keys, *args)
                answer = client.parse_response(conn, command)
            except rx.NoScriptError:
                continue  # not run: send the script itself
            except (rx.ConnectionError, rx.TimeoutError) as e:
                conn.disconnect()
                if isinstance(e, rx.BusyLoadingError):
                    raise _NotRun(e) from None
                raise
            if wait is None:
                return answer
            if not _published(answer):
                return answer, 0
            try:
                conn.send_command("WAIT", *wait)
                return answer, int(client.parse_response(conn, "WAIT"))
            except rx.RedisError as e:
                if isinstance(e, (rx.ConnectionError, rx.TimeoutError)):
                    conn.disconnect()
                return answer, e
    finally:
        pool.release(conn)


class _Cluster:
    """A Redis Cluster as the Publisher uses it: each script goes to the
    master of its keys' slot, once. redis-py's RedisCluster would send a
    command again after a timeout or a broken connection, up to five
    times; a publish whose answer is lost is settled with fence.lua
    instead, as the Go broker does. So the cluster client only keeps the
    slot map and the nodes' connections, and scripts are sent on a
    connection of the node itself. MOVED and ASK, which say the script did
    not run, are followed, as go-redis follows them.
    """

    def __init__(self, nodes, options):
        self._nodes = nodes
        self._options = options
        self._client = None
        self._stale = False
        self._lock = threading.Lock()

    def _cluster(self):
        """The cluster client, made on first use, with its slot map read
        again after an error: a master may have failed over."""
        from redis.cluster import ClusterNode, RedisCluster

        with self._lock:
            try:
                if self._client is None:
                    # redis-py logs every node it cannot reach, with a
                    # traceback; with no logging set up, Python would print
                    # them on stderr. An app that sets up logging sees them.
                    log = logging.getLogger("redis.cluster")
                    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
                        log.addHandler(logging.NullHandler())
                    self._client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self._nodes],
                                                cluster_error_retry_attempts=1, **self._options)
                elif self._stale:
                    self._client.nodes_manager.initialize()
                self._stale = False
            except Exception as e:  # redis-py raises RedisClusterException, ConnectionError, ...
                raise _NotRun(e) from None
            return self._client

    def run(self, script, keys, args, wait=None):
        """Run script on the master of keys[0]'s slot and return its answer,
        with WAIT after it as _send sends it.

        Raises _NotRun when the script surely did not run, redis-py's
        ConnectionError or TimeoutError when its answer was lost, and
        ResponseError for an error the script returned.
        """
        import redis.exceptions as rx
        from redis.crc import key_slot

        rc = self._cluster()
        slot = key_slot(keys[0].encode("utf-8"))
        asking = None
        err = None
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                node = rc.get_node(node_name=asking) if asking else rc.nodes_manager.get_node_from_slot(slot)
                if node is None:
                    raise _NotRun(err)
                client = rc.get_redis_connection(node)
                return _send(client, script, keys, args, asking is not None, wait)
            except rx.MovedError as e:
                err, asking = e, None
                rc.nodes_manager.update_moved_exception(e)
            except rx.AskError as e:
                err, asking = e, "%s:%s" % (e.host, e.port)
            except rx.RedisClusterException as e:  # the slot is not served
                self._stale = True
                raise _NotRun(e) from None
            except rx.ResponseError as e:
                if _refused(e):
                    self._stale = True
                    raise _NotRun(e) from None
                raise
            except (_NotRun, rx.ConnectionError, rx.TimeoutError):
                self._stale = True
                raise
        self._stale = True
        raise _NotRun(err)

    def close(self):
        with self._lock:
            if self._client is not None:
                self._client.close()


def _master_connection_class():
    """redis-py's connection to a master under Sentinel, but for what it
    does with a READONLY answer: the master was demoted, so the script did
    not run. redis-py's own closes the connection, so that the next one
    asks the sentinels again, and raises ConnectionError, which reads as a
    lost answer; this one closes it too and keeps the ReadOnlyError."""
    from redis.connection import Connection
    from redis.exceptions import ReadOnlyError
    from redis.sentinel import SentinelManagedConnection

    class MasterConnection(SentinelManagedConnection):
        def read_response(self, *args, **kwargs):
            try:
                return Connection.read_response(self, *args, **kwargs)
            except ReadOnlyError:
                self.disconnect()
                raise

    return MasterConnection


class _Sentinel:
    """Redis under Sentinel as the Publisher uses it: the master the
    sentinels name, asked again whenever a connection to it is made, so
    that a publish after a failover goes to the promoted replica. Each
    script is sent once, as on one Redis: no master found, a connection
    refused or a READONLY answer mean it did not run; a lost answer is
    settled with fence.lua.
    """

    def __init__(self, sentinels, master_name, options, sentinel_options):
        from redis.sentinel import Sentinel

        self._sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_options)
        self._client = self._sentinel.master_for(master_name, connection_class=_master_connection_class(),
                                                 retry_on_timeout=False, **options)

    def run(self, script, keys, args, wait=None):
        """Run script on the master and return its answer, raising as
        _Cluster.run does."""
        import redis.exceptions as rx

        try:
            return _send(self._client, script, keys, args, wait=wait)
        except rx.ResponseError as e:
            if _refused(e):
                raise _NotRun(e) from None
            raise

    def close(self):
        self._client.connection_pool.disconnect()
        for s in self._sentinel.sentinels:
            s.connection_pool.disconnect()


class _Single:
    """One Redis, when the Publisher waits for replicas: the script and the
    WAIT after it go on one connection, which redis-py's Script cannot
    do. Each script is sent once, as by Script."""

    def __init__(self, client):
        self._client = client

    def run(self, script, keys, args, wait=None):
        """Run script and return its answer, raising as _Cluster.run does."""
        return _send(self._client, script, keys, args, wait=wait)

    def close(self):
        pass  # the Publisher closes the client


class Publisher:
    """Publishes events to ssehub.

    ``url`` chooses how:

    - ``redis://`` or ``rediss://``: straight into the Redis the hubs use,
      with the publish script the Go broker runs (read from the same
      file), so ids, history, resume and envelopes are exactly those of an
      event published through a hub. ``history_size``, ``history_age``
      (seconds), ``history_bytes``, ``channel_history_bytes`` and ``prefix``
      must be those of the hubs. ``envelope`` is
      the shape of the message on the channel for Python readers of the
      same Redis, as the hubs' ``--redis-envelope``: "invenio" (the
      default) or "flask-sse".
    - ``redis-cluster://[user:password@]HOST:PORT[,HOST:PORT...]``: straight
      into a Redis Cluster, as the hubs' ``--broker redis-cluster://...``
      lays it out: every key of a channel in the channel's hash slot, with
      its own counter, history bound and idempotency keys, the script run
      on the channel's master, and the event sent with SPUBLISH. A few
      nodes suffice; the query may set ``dial_timeout`` and
      ``read_timeout`` (such as ``?dial_timeout=3s``) in place of
      ``timeout``. ``history_bytes`` bounds each channel, as on the hubs;
      ``prefix`` must not hold ``{`` or ``}``, and the "flask-sse"
      envelope is refused: its readers do not subscribe sharded channels.
    - ``redis-sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/MASTER_NAME``:
      straight into the master the sentinels name, as the hubs' ``--broker
      redis-sentinel://...`` uses it: the keys are laid out as on one Redis,
      and after a failover the next publish goes to the promoted replica.
      The query takes what the hubs' does: ``db``, ``password`` (the
      master's), ``sentinel_username`` and ``sentinel_password`` (what the
      sentinels ask for), and ``dial_timeout``, ``read_timeout`` and
      ``write_timeout`` in place of ``timeout``.
    - ``http://`` or ``https://``: a POST to the hub's /publish, with
      ``token`` as a bearer token when given.

    With a Redis URL, ``wait_replicas`` N makes each publish wait until N
    replicas confirm that they hold the event, as the hubs'
    ``--redis-wait-replicas``: the Publisher sends ``WAIT`` after the
    publish script on the same connection, for at most ``wait_timeout``
    seconds (less than the read timeout: ``timeout``, or the URL's
    ``read_timeout``). With fewer replicas, publish() raises
    PublishError ``publish_outcome_unknown`` (status 504), with the event's
    id in ``id``: the event is published and delivered, but a failover now
    may lose it. Sent again with the same idempotency key, it is not
    published twice, and the Publisher waits for the replicas again.

    A Publisher is safe to share between threads.
    """

    def __init__(self, url, token=None, timeout=10.0, history_size=DEFAULT_HISTORY_SIZE,
                 history_age=DEFAULT_HISTORY_AGE, prefix=DEFAULT_PREFIX,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, envelope="invenio",
                 history_bytes=DEFAULT_HISTORY_BYTES, channel_history_bytes=None,
                 idempotency_window=DEFAULT_IDEMPOTENCY_WINDOW, wait_replicas=0, wait_timeout=1.0):
        if envelope not in ("invenio", "flask-sse"):
            raise ValueError("ssehub: envelope %r: use 'invenio' or 'flask-sse'" % (envelope,))
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int) or wait_replicas < 0:
            raise ValueError("ssehub: wait_replicas %r: want a whole number, 0 or more" % (wait_replicas,))
        if isinstance(wait_timeout, bool) or not isinstance(wait_timeout, (int, float)) or not wait_timeout >= 0:
            raise ValueError("ssehub: wait_timeout %r: want seconds, 0 or more" % (wait_timeout,))
        if wait_replicas and wait_timeout < 0.001:
            # WAIT with a timeout of 0 would wait for ever.
            raise ValueError("ssehub: wait_timeout %r: want 0.001 (1 ms) or more" % (wait_timeout,))
        self._wait = (wait_replicas, max(int(round(wait_timeout * 1000)), 1)) if wait_replicas else None
        self._wait_timeout = wait_timeout
        self.envelope = envelope
        scheme = urllib.parse.urlsplit(url).scheme
        self.url = url
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        # _runner sends the scripts on a cluster or under Sentinel, where
        # the node to send them to is found anew after an error, and on one
        # Redis when each publish is followed by WAIT.
        self._redis = self._cluster = self._runner = None
        if url.startswith(CLUSTER_SCHEME):
            nodes, options = parse_cluster_url(url)
            if envelope == "flask-sse":
                raise ValueError("ssehub: envelope 'flask-sse': on Redis Cluster events go out on sharded channels, "
                                 "which flask-sse's readers do not subscribe")
            if "{" in prefix or "}" in prefix:
                raise ValueError("ssehub: prefix %r: on Redis Cluster each channel has its own hash slot, so the "
                                 "prefix must not hold a hash tag ({ or })" % (prefix,))
            options = dict({"socket_timeout": timeout, "socket_connect_timeout": timeout}, **options)
            # No retries by redis-py: see _Cluster.
            self._cluster = self._runner = _Cluster(nodes, dict(options, retry_on_timeout=False))
            self._script = _Script("publish.lua")
            self._fence = _Script("fence.lua")
        elif url.startswith(SENTINEL_SCHEME):
            sentinels, master, options, sentinel_options = parse_sentinel_url(url)
            options = dict({"socket_timeout": timeout, "socket_connect_timeout": timeout}, **options)
            # The sentinels are asked with the master's timeouts, as go-redis
            # asks them.
            sentinel_options.update((k, v) for k, v in options.items() if k.startswith("socket_"))
            self._runner = _Sentinel(sentinels, master, options, sentinel_options)
            self._script = _Script("publish.lua")
            self._fence = _Script("fence.lua")
        elif scheme in ("redis", "rediss", "unix"):
            import redis

            # No retries by redis-py: a publish whose answer is lost is
            # settled with fence.lua, as the Go broker does.
            self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                               retry_on_timeout=False)
            if self._wait:
                self._runner = _Single(self._redis)
                self._script = _Script("publish.lua")
                self._fence = _Script("fence.lua")
            else:
                self._script = self._redis.register_script(_load_script("publish.lua"))
                self._fence = self._redis.register_script(_load_script("fence.lua"))
        if self._wait and (self._redis is not None or self._runner is not None):
            # WAIT's answer must come before the read timeout, or it would
            # read as lost.
            if self._redis is not None:
                read_timeout = self._redis.connection_pool.connection_kwargs.get("socket_timeout")
            else:
                read_timeout = options.get("socket_timeout")
            if read_timeout and wait_timeout >= read_timeout:
                self.close()
                raise ValueError("ssehub: wait_timeout %g: want less than the read timeout, %g s"
                                 % (wait_timeout, read_timeout))
        if self._redis is not None or self._runner is not None:
            self._size = int(history_size)
            self._age_us = int(history_age * 1_000_000) if history_age > 0 else 0
            self._bytes = int(history_bytes)
            if channel_history_bytes is None:
                channel_history_bytes = max(self._bytes // 4, 1) if self._bytes > 0 else 0
            self._chan_bytes = int(channel_history_bytes)
            self._window_us = int(idempotency_window * 1_000_000)
            self._prefix = prefix
            self._http = None
        elif scheme in ("http", "https"):
            if self._wait:
                raise ValueError("ssehub: wait_replicas is for a Redis URL; a hub waits for its Redis's replicas "
                                 "with its own --redis-wait-replicas")
            self._http = url.rstrip("/") + "/publish"
            self._token = token
        else:
            raise ValueError("ssehub: url %r: use redis://, rediss://, redis-cluster://, redis-sentinel:// or http(s)://" % url)

    def publish(self, data, type_=None, id_=None, retry=None, channel=DEFAULT_CHANNEL, idempotency_key=None,
                **kwargs):
        """Publish data as a server-sent event and return the event's id.

        The signature is invenio-sse's ``publish``; flask-sse's keyword
        names ``type`` and ``id`` work too. ``data`` is any value json.dumps
        takes; ``type_`` sets the event's type; ``id_`` its id (a string or a
        number; none lets the hub assign one); ``retry`` the browser's
        reconnection time in milliseconds (a number or a numeric string,
        as invenio-sse's CLI passes it). False values set nothing, as in
        those libraries.

        ``idempotency_key`` names the message: published again with the same
        key (a retry after an error), it is published once and the same id
        is returned. Without one, the Publisher makes one per call, which
        guards against the call itself being sent twice.
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
        key = idempotency_key or ""
        if len(key) > MAX_IDEMPOTENCY_KEY_LEN or any(not "!" <= c <= "~" for c in key):
            raise PublishError("invalid_idempotency_key",
                               "idempotency key: at most %d printable ASCII characters without spaces"
                               % MAX_IDEMPOTENCY_KEY_LEN)
        body = _encode_data(data)
        if len(body) > self.max_message_bytes:
            raise PublishError("too_large", "%d bytes of data, limit %d" % (len(body), self.max_message_bytes))
        if self._http is None:
            return self._publish_redis(channel, body, typ, ident, ms, key)
        return self._publish_http(channel, body, typ, ident, ms, key)

    def envelope_head(self, body, typ, retry):
        """The start of the envelope, up to ``"id":``, as the Go broker writes it."""
        head = b'{"data":' + body + b',"event":'
        head += go_json_string(typ).encode("utf-8") if typ else b"null"
        head += b',"retry":' + (str(retry).encode() if retry else b"null") + b',"id":'
        return head

    def _publish_redis(self, channel, body, typ, ident, retry, key):
        import redis

        p = self._keyprefix(channel)
        keys = [p + "state", p + "active", p + "evicted", p + "stream:" + channel, p + "ids:" + channel,
                p + "first", p + "bytes", p + "keys", p + "keyq"]
        idjson = go_json_string(ident).encode("utf-8") if ident else b""
        head = self.envelope_head(body, typ, retry)
        window = self._window_us
        if not key:
            key, window = "~" + _token(16), int(GENERATED_KEY_WINDOW * 1_000_000)
        fp = hashlib.sha256(channel.encode() + b"\0" + head + b"\0" + idjson).hexdigest()
        attempt = _token(9)
        args = [channel, head, idjson, ident, self._size, self._age_us, p, self._bytes, self._chan_bytes,
                key, fp, attempt, window, DEFAULT_MAX_IDEMPOTENCY_KEYS]
        if self.envelope == "flask-sse":
            # flask-sse's message around the id: the script puts it on the
            # channel and the envelope on the channel's twin.
            tail = b""
            if retry:
                tail += b', "retry": ' + str(retry).encode()
            if typ:
                tail += b', "type": ' + go_json_string(typ).encode("utf-8")
            args += ["f", b'{"data": ' + body + b', "id": ', tail + b"}"]
        elif self._cluster is not None:
            args += ["", "", "", "s"]
        acked = None
        try:
            if self._wait:
                (seq, _, status), acked = self._runner.run(self._script, keys, args, self._wait)
            elif self._runner is not None:
                seq, _, status = self._runner.run(self._script, keys, args)
            else:
                seq, _, status = self._script(keys=keys, args=args)
        except _NotRun as e:
            raise PublishError("unavailable", "publish on %r: %s" % (channel, e)) from None
        except redis.ResponseError as e:
            if str(e).startswith("SSEHUB_KEY_REUSED"):
                raise PublishError("idempotency_key_reused", "idempotency key %r was used for another message" % key,
                                   422) from None
            raise PublishError("unavailable", "publish on %r: %s" % (channel, e)) from None
        except (redis.TimeoutError, redis.ConnectionError) as e:
            if self._runner is None and "connecting to" in str(e):
                # No connection could be made: the script never ran.
                raise PublishError("unavailable", "publish on %r: %s" % (channel, e)) from None
            # The script may have run, or may still run: settle it.
            seq = self._settle(key, attempt, fp, max(window, self._window_us), channel, e)
            if self._wait:
                # Published, but the WAIT that would confirm it was to
                # follow on the lost connection.
                raise PublishError("publish_outcome_unknown",
                                   "publish on %r: published, but the replicas' confirmation did not come: %s"
                                   % (channel, e), 504, ident or "%016d" % seq) from None
            return ident or "%016d" % seq
        except redis.RedisError as e:
            raise PublishError("unavailable", "publish on %r: %s" % (channel, e)) from None
        if status == 2 or not seq:
            raise PublishError("unavailable", "publish on %r: not published" % channel)
        event_id = ident or "%016d" % int(seq)
        if isinstance(acked, Exception):
            raise PublishError("publish_outcome_unknown",
                               "publish on %r: published, but the replicas' confirmation did not come: %s"
                               % (channel, _error_text(acked)), 504, event_id)
        if self._wait and acked < self._wait[0]:
            raise PublishError("publish_outcome_unknown",
                               "publish on %r: published, but only %d of %d replicas confirmed it within %s"
                               % (channel, acked, self._wait[0], _go_duration(self._wait_timeout)), 504, event_id)
        return event_id

    def _keyprefix(self, channel):
        """The prefix of channel's keys, as the Go broker's keysOf makes it:
        on one Redis the keys but the stream and the id index are shared by
        all channels; on a cluster each channel has its own, in its hash
        slot, which the hash tag "{channel}" after the prefix selects."""
        if self._cluster is not None:
            return self._prefix + "{" + channel + "}"
        return self._prefix

    def _settle(self, key, attempt, fp, window, channel, cause):
        """Ask Redis whether key was published; if not, close it to the
        attempt still on its way. Returns the seq it was published as."""
        import redis

        p = self._keyprefix(channel)
        keys, args = [p + "keys", p + "keyq"], [key, attempt, fp, window]
        try:
            if self._runner is not None:
                done, seq = self._runner.run(self._fence, keys, args)
            else:
                done, seq = self._fence(keys=keys, args=args)
        except (redis.RedisError, _NotRun):
            raise PublishError("publish_outcome_unknown",
                               "publish on %r: Redis did not confirm it; it may be published: %s" % (channel, cause),
                               504) from None
        if done == 1:
            return int(seq)
        if done == 2:
            raise PublishError("idempotency_key_reused", "idempotency key %r was used for another message" % key, 422)
        raise PublishError("unavailable", "publish on %r: not published: %s" % (channel, cause))

    def _publish_http(self, channel, body, typ, ident, retry, key):
        msg = b'{"channel":' + json.dumps(channel).encode() + b',"data":' + body
        if typ:
            msg += b',"type":' + json.dumps(typ, ensure_ascii=False).encode("utf-8")
        if ident:
            msg += b',"id":' + json.dumps(ident, ensure_ascii=False).encode("utf-8")
        if retry:
            msg += b',"retry":' + str(retry).encode()
        msg += b"}"
        headers = {"Content-Type": "application/json", "Idempotency-Key": key or uuid.uuid4().hex}
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
        if self._runner is not None:
            self._runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
