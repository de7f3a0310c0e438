"""OpenTelemetry spans of the bindings (``PLOY_TRACING`` with ``opentelemetry-api``).

One ``CLIENT`` span per operation, named ``"{op} {resource}"``, with the
attributes of the semantic conventions for database and Redis client
spans: ``db.system`` (``redis``, ``sqlite``, ``postgresql``, ``mysql``,
``mariadb``; ``memory`` for ``memory://``), ``db.operation.name`` (the
binding's operation: ``get``, ``set_many``...), ``server.address`` and
``server.port`` for a server, ``db.namespace`` (the database name, or the
Redis database number) and ``db.collection.name`` (State's table). Never a
value; the key (``db.query.text`` is not set) only as ``ploy.key`` when
``PLOY_TRACING_KEYS`` is on. A failure sets the span's status to ERROR and
``error.type``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from .stats import Sample

#: ``db.system`` per cache URL scheme.
CACHE_SYSTEMS = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+cluster": "redis",
    "redis+sentinel": "redis",
}


def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def cache_attributes(display_url: str, scheme: str) -> dict[str, Any]:
    """The server attributes of a cache backend, from its redacted URL."""
    system = CACHE_SYSTEMS.get(scheme, scheme)
    attrs: dict[str, Any] = {"db.system": system}
    if system != "redis" or scheme in ("unix", "redis+cluster", "redis+sentinel"):
        return attrs  # no one server (or a socket file) to name
    parts = urlsplit(display_url)
    if parts.hostname:
        attrs["server.address"] = parts.hostname
        attrs["server.port"] = parts.port or 6379
    db = parts.path.strip("/")
    attrs["db.namespace"] = db if db.isdigit() else "0"
    return attrs


def state_attributes(url: Any, table: str) -> dict[str, Any]:
    """The server attributes of a State database; *url* is SQLAlchemy's ``URL``."""
    attrs: dict[str, Any] = {"db.system": url.get_backend_name(), "db.collection.name": table}
    if url.host:
        attrs["server.address"] = url.host
        if url.port:
            attrs["server.port"] = url.port
    if url.database and attrs["db.system"] != "sqlite":
        attrs["db.namespace"] = url.database
    return attrs


class Tracing:
    """Starts the spans of one app's bindings.

    :param keys: Put the key on spans as ``ploy.key`` (``PLOY_TRACING_KEYS``).
    """

    def __init__(self, keys: bool) -> None:
        from opentelemetry import trace

        from .. import __version__

        self.keys = keys
        self._trace = trace
        self._tracer = trace.get_tracer("flask_ploy", __version__)
        self._client = trace.SpanKind.CLIENT

    @contextlib.contextmanager
    def span(self, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        """A CLIENT span named *name*, current inside the block; it is ended
        by :meth:`finish`, not by the block, so an iterator operation
        (``items``) ends it when its iteration does."""
        span = self._tracer.start_span(name, kind=self._client, attributes=attributes)
        with self._trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield span

    def finish(self, span: Any, sample: Sample, exc: BaseException | None) -> None:
        """Put what the operation did on *span*, and end it."""
        try:
            self._describe(span, sample, exc)
        finally:
            span.end()

    def _describe(self, span: Any, sample: Sample, exc: BaseException | None) -> None:
        span.set_attribute("ploy.outcome", sample.outcome)
        if sample.hits or sample.misses:
            span.set_attribute("ploy.cache.hits", sample.hits)
            span.set_attribute("ploy.cache.misses", sample.misses)
        if sample.outcome in ("error", "skipped"):
            kind = type(exc).__qualname__ if exc is not None else (sample.error or "skipped")
            span.set_attribute("error.type", kind)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, sample.error))
