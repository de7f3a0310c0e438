"""This process's counters per binding, resource and operation: :class:`Stats`.

Kept only while ``PLOY_METRICS`` is on (see :doc:`/observability`). Every
count is of operations this process ran through ``g.env``; nothing is
shared between processes (Prometheus's multiprocess mode does that).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: Upper bounds of the latency histogram's buckets, in seconds (the last,
#: ``+Inf``, is implicit). The same bounds as the Prometheus histogram.
BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: What an operation's ``outcome`` can be: ``ok`` (it returned), ``error``
#: (the backend failed: raised, or in cache ``"miss"`` mode turned into a
#: miss), ``skipped`` (the cache's circuit breaker was open: not tried) and
#: ``invalid`` (bad arguments: :class:`TypeError` or :class:`ValueError`).
OUTCOMES = ("ok", "error", "skipped", "invalid")


@dataclass
class OpStats:
    """The counters of one ``(binding, resource, op)``; read under the lock.

    :ivar calls: Operations, whatever their outcome.
    :ivar outcomes: Operations per outcome (:data:`OUTCOMES`).
    :ivar errors: Failures per kind: ``down``, ``error`` and ``busy`` (cache,
        as :meth:`~flask_ploy.cache.CacheBackend.classify` says),
        ``unavailable`` and ``in_doubt`` (State), ``other``.
    :ivar hits: Keys found by ``get``, ``get_many`` and ``get_or_set``
        (cache bindings only).
    :ivar misses: Keys not found by them (``get_or_set``: computed).
    :ivar bytes_in: UTF-8 bytes of the values read.
    :ivar bytes_out: UTF-8 bytes of the values written.
    :ivar seconds: Total duration, in seconds.
    :ivar buckets: Operations per latency bucket (:data:`BUCKETS`, then
        ``+Inf``), not cumulative.
    """

    calls: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def as_dict(self) -> dict[str, Any]:
        """Plain data: the fields, with ``buckets`` as ``{"le": count}``
        cumulative, Prometheus style (``"+Inf"`` equals ``calls``)."""
        running = 0
        cumulative: dict[str, int] = {}
        for bound, n in zip((*map(repr, BUCKETS), "+Inf"), self.buckets):
            running += n
            cumulative[bound] = running
        return {
            "calls": self.calls,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "hits": self.hits,
            "misses": self.misses,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": self.seconds,
            "buckets": cumulative,
        }


class Sample(NamedTuple):
    """What one operation did, as :class:`Stats` and the other sinks take it.

    :ivar seconds: Its duration.
    :ivar outcome: One of :data:`OUTCOMES`.
    :ivar error: The failure's kind when *outcome* is ``error``, else ``None``.
    :ivar hits: Keys found (cache reads), :ivar misses: keys not found.
    :ivar bytes_in: UTF-8 bytes read; :ivar bytes_out: written.
    """

    seconds: float
    outcome: str
    error: str | None = None
    hits: int = 0
    misses: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class Stats:
    """Counters per ``(binding, resource, op)``; thread-safe (one lock).

    :meth:`record` takes the lock once per operation; :meth:`snapshot`
    copies everything under it, so a snapshot is consistent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[tuple[str, str, str], OpStats] = {}

    def record(self, binding: str, resource: str, op: str, sample: Sample) -> None:
        """Count one operation."""
        slot = bisect.bisect_left(BUCKETS, sample.seconds)
        key = (binding, resource, op)
        with self._lock:
            s = self._ops.get(key)
            if s is None:
                s = self._ops[key] = OpStats()
            s.calls += 1
            s.outcomes[sample.outcome] = s.outcomes.get(sample.outcome, 0) + 1
            if sample.error is not None:
                s.errors[sample.error] = s.errors.get(sample.error, 0) + 1
            s.hits += sample.hits
            s.misses += sample.misses
            s.bytes_in += sample.bytes_in
            s.bytes_out += sample.bytes_out
            s.seconds += sample.seconds
            s.buckets[slot] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{binding: {"resource": r, "ops": {op: OpStats.as_dict()}}}``."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (binding, resource, op), s in sorted(self._ops.items()):
                entry = out.setdefault(binding, {"resource": resource, "ops": {}})
                entry["ops"][op] = s.as_dict()
        return out

    def reset(self) -> None:
        """Forget every count (tests, or after a scrape that wants deltas)."""
        with self._lock:
            self._ops.clear()


def utf8_len(value: object) -> int:
    """Bytes of *value* in UTF-8 if it is a ``str``, else 0."""
    if type(value) is not str:
        return 0
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
