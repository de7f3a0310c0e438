"""Per-request recording of operations (``PLOY_RECORD_OPS``):
:func:`get_recorded_ops`, like Flask-SQLAlchemy's ``get_recorded_queries()``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flask import g, has_app_context

#: Operations kept per app context; later ones are counted in
#: :func:`dropped_ops` only, so a loop in a debug request cannot eat memory.
MAX_RECORDED = 10_000

_OPS = "_ploy_recorded_ops"
_DROPPED = "_ploy_dropped_ops"


class RecordedOp(NamedTuple):
    """One operation of the current app context (request).

    :ivar binding: The binding name (``CACHE``).
    :ivar resource: Its resource (``default``).
    :ivar op: The operation (``get``).
    :ivar key: The key, the first keys of a multi-key operation, a
        ``list``/``items`` prefix, or ``None``.
    :ivar duration: Seconds it took (``time.perf_counter``).
    :ivar outcome: ``ok``, ``error``, ``skipped`` or ``invalid``
        (:data:`~flask_ploy.observe.stats.OUTCOMES`).
    :ivar detail: ``hit``/``miss`` for cache reads, the error's kind, or ``""``.
    :ivar start: ``time.time()`` when it started.
    """

    binding: str
    resource: str
    op: str
    key: str | None
    duration: float
    outcome: str
    detail: str
    start: float


def record(op: RecordedOp) -> None:
    """Append *op* to the current app context's list (nothing outside one)."""
    if not has_app_context():
        return
    d = g._get_current_object().__dict__
    ops: list[RecordedOp] | None = d.get(_OPS)
    if ops is None:
        ops = d[_OPS] = []
    if len(ops) < MAX_RECORDED:
        ops.append(op)
    else:
        d[_DROPPED] = d.get(_DROPPED, 0) + 1


def get_recorded_ops() -> list[RecordedOp]:
    """The operations recorded in the current app context (one per request),
    in the order they ended; empty outside an app context or when
    ``PLOY_RECORD_OPS`` is off. Operations of threads that run in a copy of
    the context (``copy_current_request_context``) are included."""
    if not has_app_context():
        return []
    return list(g.get(_OPS, ()))


def dropped_ops() -> int:
    """Operations of the current app context not kept, past :data:`MAX_RECORDED`."""
    return int(g.get(_DROPPED, 0)) if has_app_context() else 0


def key_label(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """What :attr:`RecordedOp.key` shows for a call; never consumes an iterator."""
    first = args[0] if args else kwargs.get("key", kwargs.get("prefix"))
    if first is None:
        first = kwargs.get("keys", kwargs.get("mapping"))
    if type(first) is str:
        return first
    if isinstance(first, (list, tuple, dict)):
        keys = [k for k in list(first)[:3] if type(k) is str]
        more = len(first) - len(keys)
        return ", ".join(keys) + (f" (+{more})" if more > 0 else "")
    return None
