"""URL helpers shared by the cache and state modules."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

_SECRET_PARAMS = ("password", "secret", "token", "passwd", "key")


def redact_url(url: str) -> str:
    """Return *url* with any password replaced by ``***``.

    Masks the user-info password (``redis://:pw@host``, ``user:pw@host``,
    redis-py's password-only ``redis://pw@host``) and password-like query
    parameters (``?password=pw``, ``?sentinel_password=pw``). Passwords may
    hold any character: SQLAlchemy accepts ``/``, ``#`` and ``?`` in them
    (base64 passwords have ``/``), where :func:`urllib.parse.urlsplit`
    would end the host part early. So everything between ``://`` and the
    last ``@`` counts as user info; at worst, more than the password is
    masked.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            rest = f"{user}:***@{hostpart}" if password else rest
        elif scheme.lower().startswith(("redis", "rediss", "unix")):
            rest = f"***@{hostpart}"  # redis://secret@host is a password-only form
        elif "/" in user or "?" in user or "#" in user:
            rest = f"***@{hostpart}"  # not a plain user name: assume the worst
    before, q, query = rest.partition("?")
    if q and query:
        fragment = ""
        query, hash_, frag = query.partition("#")
        if hash_:
            fragment = "#" + frag
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret(k) for k, _ in pairs):
            query = urlencode([(k, "***" if _secret(k) else v) for k, v in pairs], safe="*")
            rest = f"{before}?{query}{fragment}"
    return f"{scheme}://{rest}"


def ambiguous_userinfo(url: str) -> bool:
    """Whether *url*'s user info holds ``/``, ``?`` or ``#``: a parser that
    splits at the first of them (``urllib.parse``, redis-py) would take part
    of the password for the host."""
    _, sep, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0] if sep else ""
    return any(c in userinfo for c in "/?#")


def scrub(text: str, url: str) -> str:
    """*text* (a parser's error message about *url*) without any piece of
    *url*'s user info: a parser that split the URL in the wrong place may
    quote part of a password as a port or a host."""
    _, sep, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0] if sep else ""
    for piece in sorted(re.split(r"[:/?#@,;]+", userinfo), key=len, reverse=True):
        if len(piece) >= 2:
            text = text.replace(piece, "***")
    return text


def _secret(name: str) -> bool:
    name = name.lower()
    return any(s in name for s in _SECRET_PARAMS)


def split_hosts(
    netloc: str, default_port: int
) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """Split ``user:pw@h1:p1,h2:p2`` into user, password and host pairs."""
    user = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        u, sep, p = userinfo.partition(":")
        user = u or None
        password = p if sep else None
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        else:
            host, sep, p = part.rpartition(":")
            if not sep:
                host, port = part, default_port
            else:
                port = int(p)
        hosts.append((host, port))
    return user, password, hosts
