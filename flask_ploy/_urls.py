"""URL helpers shared by the cache and state modules."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = ("password", "secret", "token", "passwd", "key")


def redact_url(url: str) -> str:
    """Return *url* with any password replaced by ``***``.

    Handles passwords in the user-info part (``redis://:pw@host``) and in
    query parameters (``?password=pw``, ``?sentinel_password=pw``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = original_netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, sep, password = userinfo.partition(":")
        if sep and password:
            netloc = f"{user}:***@{hostinfo}"
        elif not sep and user and parts.scheme.startswith(("redis", "rediss", "unix")):
            # redis://secret@host is a password-only form in redis-py
            netloc = f"***@{hostinfo}"
    query = original_query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(any(s in k.lower() for s in _SECRET_PARAMS) for k, _ in pairs):
            query = urlencode(
                [
                    (k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v)
                    for k, v in pairs
                ],
                safe="*",
            )
    if netloc == original_netloc and query == original_query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
