"""A Flask extension that takes the place of invenio-sse's and flask-sse's.

An invenio-sse app changes one import::

    from ssehub.flask import SSEHub as InvenioSSE, current_sse

and keeps calling ``current_sse.publish(data, type_=..., id_=..., retry=...,
channel=...)``. A flask-sse app imports ``sse`` from here instead and keeps
calling ``sse.publish(data, type=..., id=..., retry=..., channel=...)``.

Configuration, read when the app starts:

- ``SSE_REDIS_URL``, as in invenio-sse (default
  ``redis://localhost:6379/0``), or ``REDIS_URL``, as in flask-sse: events
  go straight into that Redis, which the hubs use; a
  ``redis-cluster://HOST:PORT[,HOST:PORT...]`` URL names a Redis Cluster,
  and a ``redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME`` URL the
  master of a Redis under Sentinel, as for the hubs.
- ``SSEHUB_URL``: when set (``http(s)://hub``), events go through that hub's
  /publish instead, with ``SSEHUB_TOKEN`` as the bearer token.
- ``SSEHUB_HISTORY_SIZE``, ``SSEHUB_HISTORY_AGE`` (seconds),
  ``SSEHUB_PREFIX`` and ``SSEHUB_REDIS_ENVELOPE``: with Redis, the hubs'
  values, when not their defaults.
- ``SSEHUB_REDIS_WAIT_REPLICAS`` and ``SSEHUB_REDIS_WAIT_TIMEOUT``
  (seconds, default 1): with Redis, each publish waits until that many
  replicas hold it, as the hubs' ``--redis-wait-replicas``; fewer in time
  raise PublishError ``publish_outcome_unknown`` with the event's id.

The browser's stream is served by the hub, not by the app: route the app's
/sse (or /stream) path to the hub in the proxy in front of both, or point
the page's EventSource at the hub.
"""

from flask import Blueprint, current_app
from werkzeug.local import LocalProxy

from .publisher import DEFAULT_CHANNEL, DEFAULT_HISTORY_AGE, DEFAULT_HISTORY_SIZE, DEFAULT_PREFIX, Publisher

EXTENSION = "ssehub"


def _publisher(app):
    cfg = app.config
    hub = cfg.get("SSEHUB_URL")
    if hub:
        return Publisher(hub, token=cfg.get("SSEHUB_TOKEN"))
    url = cfg.get("SSE_REDIS_URL") or cfg.get("REDIS_URL") or "redis://localhost:6379/0"
    return Publisher(
        url,
        history_size=cfg.get("SSEHUB_HISTORY_SIZE", DEFAULT_HISTORY_SIZE),
        history_age=cfg.get("SSEHUB_HISTORY_AGE", DEFAULT_HISTORY_AGE),
        prefix=cfg.get("SSEHUB_PREFIX", DEFAULT_PREFIX),
        envelope=cfg.get("SSEHUB_REDIS_ENVELOPE", "invenio"),
        wait_replicas=cfg.get("SSEHUB_REDIS_WAIT_REPLICAS", 0),
        wait_timeout=cfg.get("SSEHUB_REDIS_WAIT_TIMEOUT", 1.0),
    )


class SSEHub:
    """The extension: ``SSEHub(app)`` or ``SSEHub().init_app(app)``.

    The app's Publisher is ``app.extensions["ssehub"]``; ``current_sse``
    is it for the current app.
    """

    def __init__(self, app=None, **kwargs):
        if app is not None:
            self.init_app(app, **kwargs)

    def init_app(self, app, **kwargs):
        # invenio-sse's init_app takes an entry point group for its
        # integrations; it has no meaning here.
        kwargs.pop("entry_point_group", None)
        if kwargs:
            raise TypeError("init_app() got unexpected keyword arguments %s" % ", ".join(sorted(kwargs)))
        app.config.setdefault("SSE_REDIS_URL", app.config.get("REDIS_URL") or "redis://localhost:6379/0")
        app.extensions[EXTENSION] = _publisher(app)

    def publish(self, data, type_=None, id_=None, retry=None, channel=DEFAULT_CHANNEL, **kwargs):
        """Publish through the current app's Publisher; returns the event id."""
        return current_sse.publish(data, type_=type_, id_=id_, retry=retry, channel=channel, **kwargs)


def _current():
    app = current_app._get_current_object()
    pub = app.extensions.get(EXTENSION)
    if pub is None:
        # flask-sse apps register the blueprint and never call an init.
        pub = app.extensions[EXTENSION] = _publisher(app)
    return pub


current_sse = LocalProxy(_current)
"""The current app's Publisher."""


class ServerSentEventsBlueprint(Blueprint):
    """flask-sse's ``sse`` object: register it as before, publish with
    ``sse.publish(data, type=None, id=None, retry=None, channel="sse")``.
    It serves no route: the hub serves the stream."""

    def publish(self, data, type=None, id=None, retry=None, channel=DEFAULT_CHANNEL):
        return current_sse.publish(data, type_=type, id_=id, retry=retry, channel=channel)


sse = ServerSentEventsBlueprint("sse", __name__)
