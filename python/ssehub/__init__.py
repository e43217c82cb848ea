"""Publish server-sent events to ssehub from Python.

    from ssehub import Publisher
    pub = Publisher("redis://127.0.0.1:6379/0")   # or "http://hub:8080"
    event_id = pub.publish({"code": "ACK"}, type_="cool", channel="cool_channel")

Flask apps use ``ssehub.flask``; apps that hand browsers JWTs use
``ssehub.token.mint_token``.
"""

from .publisher import DEFAULT_CHANNEL, PublishError, Publisher
from .token import mint_token

__all__ = ["DEFAULT_CHANNEL", "PublishError", "Publisher", "mint_token"]
__version__ = "0.1.0"
