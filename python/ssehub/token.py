"""Minting the JWTs that ssehub verifies (serve --jwt-secret-file)."""

import base64
import hashlib
import hmac
import json
import time

# RFC 7518 section 3.2: an HS256 key is at least 256 bits. The hub refuses
# shorter secrets, and so does this module.
MIN_SECRET_LEN = 32


def _b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def read_secret_file(path):
    """Read an HMAC secret as the hub does: the file's bytes less trailing
    CR and LF, at least MIN_SECRET_LEN of them."""
    with open(path, "rb") as f:
        secret = f.read().rstrip(b"\r\n")
    if len(secret) < MIN_SECRET_LEN:
        raise ValueError("the secret in %s is shorter than %d bytes" % (path, MIN_SECRET_LEN))
    return secret


def mint_token(secret, subject=None, publish=(), subscribe=(), ttl=3600, audience=None, issuer=None, now=None):
    """Return an HS256 JWT that the hub accepts.

    ``publish`` and ``subscribe`` list the channel patterns the holder may
    publish to and read ("orders.*", "user.42"); ``ttl`` is its lifetime in
    seconds. A web app mints one per user for the "subscribe" side, from the
    same checks invenio-sse's read permissions made, and hands it to the
    browser in the ``ssehub_token`` cookie.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if len(secret) < MIN_SECRET_LEN:
        raise ValueError("the secret is shorter than %d bytes" % MIN_SECRET_LEN)
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    for pattern in list(publish) + list(subscribe):
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("a channel pattern must be a non-empty string, not %r" % (pattern,))
    issued = int(now if now is not None else time.time())
    claims = {}
    if publish:
        claims["publish"] = list(publish)
    if subscribe:
        claims["subscribe"] = list(subscribe)
    if issuer:
        claims["iss"] = issuer
    if subject:
        claims["sub"] = subject
    if audience:
        claims["aud"] = [audience] if isinstance(audience, str) else list(audience)
    claims["exp"] = issued + int(ttl)
    claims["iat"] = issued
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = header + b"." + payload
    sig = _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + sig).decode("ascii")
