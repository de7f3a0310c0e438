"""Prometheus metrics of the bindings (``PLOY_METRICS`` with ``prometheus_client``).

The metrics are made once per process in ``prometheus_client``'s default
registry, and shared by every app of the process (the ``binding`` and
``resource`` labels tell them apart). Labels never hold keys or values.
Under gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` before the workers start
and serve :func:`exposition`, which then merges every worker's files
(see :doc:`/observability`).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

from .stats import BUCKETS, Sample

#: ``(name, type, help)`` of every metric, for the docs and the tests.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("ploy_operations_total", "counter",
     "Operations on Ploy bindings, by binding, resource, op and outcome."),
    ("ploy_operation_duration_seconds", "histogram",
     "Duration of operations on Ploy bindings, in seconds."),
    ("ploy_cache_hits_total", "counter",
     "Keys found by cache get, get_many and get_or_set."),
    ("ploy_cache_misses_total", "counter",
     "Keys not found by cache get, get_many and get_or_set."),
    ("ploy_errors_total", "counter",
     "Failed operations on Ploy bindings, by kind of failure."),
    ("ploy_read_bytes_total", "counter", "UTF-8 bytes of the values read."),
    ("ploy_written_bytes_total", "counter", "UTF-8 bytes of the values written."),
)  # fmt: skip

_made: dict[str, Any] = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether ``prometheus_client`` can be imported."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):
        return False


def _metrics() -> dict[str, Any]:
    """The metric objects, made on first use in this process."""
    if _made:
        return _made
    with _lock:
        if not _made:
            from prometheus_client import Counter, Histogram

            base = ["binding", "resource"]
            labels = {
                "ploy_operations_total": [*base, "op", "outcome"],
                "ploy_operation_duration_seconds": [*base, "op"],
                "ploy_cache_hits_total": [*base, "op"],
                "ploy_cache_misses_total": [*base, "op"],
                "ploy_errors_total": [*base, "op", "kind"],
                "ploy_read_bytes_total": base,
                "ploy_written_bytes_total": base,
            }
            made: dict[str, Any] = {}
            for name, kind, doc in METRICS:
                short = name.removesuffix("_total")  # prometheus_client adds it back
                if kind == "histogram":
                    made[name] = Histogram(short, doc, labels[name], buckets=BUCKETS)
                else:
                    made[name] = Counter(short, doc, labels[name])
            _made.update(made)
    return _made


class PrometheusSink:
    """Feeds one binding's samples to the metrics; label children are
    looked up once per ``(op, outcome)`` and kept."""

    __slots__ = ("_binding", "_children", "_m", "_resource")

    def __init__(self, binding: str, resource: str) -> None:
        self._binding = binding
        self._resource = resource
        self._m = _metrics()
        self._children: dict[tuple[str, str], Any] = {}

    def _child(self, metric: str, op: str, extra: str | None = None) -> Any:
        key = (metric, op if extra is None else f"{op}\0{extra}")
        child = self._children.get(key)
        if child is None:
            labels = [self._binding, self._resource]
            if op:
                labels.append(op)
            if extra is not None:
                labels.append(extra)
            child = self._children[key] = self._m[metric].labels(*labels)
        return child

    def record(self, op: str, sample: Sample) -> None:
        """Count one operation of *op*."""
        self._child("ploy_operations_total", op, sample.outcome).inc()
        self._child("ploy_operation_duration_seconds", op).observe(sample.seconds)
        if sample.hits:
            self._child("ploy_cache_hits_total", op).inc(sample.hits)
        if sample.misses:
            self._child("ploy_cache_misses_total", op).inc(sample.misses)
        if sample.error is not None:
            self._child("ploy_errors_total", op, sample.error).inc()
        if sample.bytes_in:
            self._child("ploy_read_bytes_total", "").inc(sample.bytes_in)
        if sample.bytes_out:
            self._child("ploy_written_bytes_total", "").inc(sample.bytes_out)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The metrics as a scrape answers them: ``(body, content type)``.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set), every process's
    metrics, merged; else this process's default registry.

    :param accept: The request's ``Accept`` header (OpenMetrics if asked).
    :raises ImportError: ``prometheus_client`` is not installed.
    """
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry: Any = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
