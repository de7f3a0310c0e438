"""What observes one app's bindings: :class:`Observer` (per app) and
:class:`BindingObserver` (per binding), and :func:`make_observer`, which
decides once, at ``init_app``, whether there is anything to observe.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..cache.base import FAULTS
from ..errors import PloyConfigError, StateInDoubt, StateUnavailable
from . import prometheus, recorder, tracing
from .proxy import observed
from .stats import Sample, Stats, utf8_len

if TYPE_CHECKING:
    from ..cache import Cache
    from ..config import Settings
    from ..state import State, StateStore

log = logging.getLogger("flask_ploy")

#: Cache operations whose result tells hits from misses.
READS = frozenset({"get", "get_many", "get_or_set"})
#: Operation -> index of the value it writes among its positional arguments.
WRITES = {"set": 1, "add": 1, "put": 1, "replace": 2}


class Observer:
    """The observation of one app's bindings (one per :class:`AppBindings`).

    :ivar stats: The process's counters (``PLOY_METRICS``), or ``None``.
    :ivar record: Operations are recorded per request (``PLOY_RECORD_OPS``).
    :ivar tracing: Spans are made (``PLOY_TRACING``), or ``None``.
    :ivar prometheus: Prometheus metrics are fed.
    """

    def __init__(
        self, *, stats: bool, prometheus: bool, tracing: tracing.Tracing | None, record: bool
    ) -> None:
        self.stats = Stats() if stats else None
        self.prometheus = prometheus
        self.tracing = tracing
        self.record = record
        self._caches: dict[str, BindingObserver] = {}
        self._states: dict[str, BindingObserver] = {}

    def features(self) -> list[str]:
        """The features on: ``metrics``, ``prometheus``, ``tracing``, ``record``."""
        on = {
            "metrics": self.stats is not None,
            "prometheus": self.prometheus,
            "tracing": self.tracing is not None,
            "record": self.record,
        }
        return [name for name, yes in on.items() if yes]

    def wrap_caches(self, caches: dict[str, Cache]) -> dict[str, Any]:
        """Proxies of the app's cache bindings (shared objects: made once)."""
        out: dict[str, Any] = {}
        for name, cache in caches.items():
            backend = cache.backend
            scheme = type(backend).schemes[0] if type(backend).schemes else "redis"

            def attrs(url: str = backend.display_url, scheme: str = scheme) -> dict[str, Any]:
                return tracing.cache_attributes(url, scheme)

            watcher = self._caches[name] = BindingObserver(self, name, cache.resource, True, attrs)
            out[name] = observed(cache, watcher)
        return out

    def wrap_state(self, state: State, store: StateStore) -> Any:
        """A proxy of *state*, a State binding made for one app context."""
        watcher = self._states.get(state.name)
        if watcher is None:

            def attrs() -> dict[str, Any]:
                return tracing.state_attributes(store.engine.url, store.settings.table)

            watcher = BindingObserver(self, state.name, state.resource, False, attrs)
            watcher = self._states.setdefault(state.name, watcher)
        return observed(state, watcher)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The counters as plain data (empty when ``PLOY_METRICS`` is off)."""
        return {} if self.stats is None else self.stats.snapshot()


class BindingObserver:
    """Times, counts, records and traces the operations of one binding."""

    __slots__ = ("_attrs", "_cache", "_observer", "_prom", "_span_attrs", "name", "resource")

    def __init__(
        self,
        observer: Observer,
        name: str,
        resource: str,
        cache: bool,
        attrs: Callable[[], dict[str, Any]],
    ) -> None:
        self._observer = observer
        self.name = name
        self.resource = resource
        self._cache = cache
        self._attrs = attrs  # the span attributes, computed on first use
        self._span_attrs: dict[str, Any] | None = None
        self._prom = prometheus.PrometheusSink(name, resource) if observer.prometheus else None

    def call(
        self,
        fn: Callable[..., Any],
        target: Any,
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run ``fn(target, *args, **kwargs)``, observed."""
        t = self._observer.tracing
        if t is None:
            return self._timed(fn, target, op, args, kwargs, None)
        base = self._span_attrs
        if base is None:
            base = self._span_attrs = {
                **self._attrs(),
                "ploy.binding": self.name,
                "ploy.resource": self.resource,
            }
        attributes = {**base, "db.operation.name": op}
        if t.keys:
            key = recorder.key_label(op, args, kwargs)
            if key is not None:
                attributes["ploy.key"] = key
        with t.span(f"{op} {self.resource}", attributes) as span:
            return self._timed(fn, target, op, args, kwargs, span)

    def _timed(
        self,
        fn: Callable[..., Any],
        target: Any,
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        span: Any,
    ) -> Any:
        computed: list[bool] = []
        if op == "get_or_set" and self._cache:
            args, kwargs = _watch_compute(args, kwargs, computed)
        if self._cache:
            FAULTS.kind = None
        start_wall = time.time()
        t0 = time.perf_counter()
        try:
            result = fn(target, *args, **kwargs)
        except BaseException as exc:
            seconds = time.perf_counter() - t0
            outcome, error = self._failure(exc)
            self._finish(op, args, kwargs, Sample(seconds, outcome, error), start_wall, span, exc)
            raise
        if inspect.isgenerator(result):
            return self._iterate(result, op, args, kwargs, start_wall, t0, span)
        seconds = time.perf_counter() - t0
        fault = FAULTS.kind if self._cache else None
        if fault is not None:  # a failure the binding turned into a miss
            outcome = "skipped" if fault == "skipped" else "error"
            sample = Sample(seconds, outcome, None if fault == "skipped" else fault)
        else:
            sample = _ok(op, self._cache, args, kwargs, result, computed, seconds)
        self._finish(op, args, kwargs, sample, start_wall, span, None)
        return result

    def _iterate(
        self,
        gen: Iterator[Any],
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start_wall: float,
        t0: float,
        span: Any,
    ) -> Iterator[Any]:
        """An iterator operation (``items``): one sample when it ends, its
        duration from the call to the end (the caller's loop included)."""
        exc: BaseException | None = None
        try:
            yield from gen
        except BaseException as e:
            exc = e
            raise
        finally:
            seconds = time.perf_counter() - t0
            if exc is None or isinstance(exc, GeneratorExit):
                sample = Sample(seconds, "ok")
            else:
                sample = Sample(seconds, *self._failure(exc))
            self._finish(op, args, kwargs, sample, start_wall, span, exc)

    def _failure(self, exc: BaseException) -> tuple[str, str | None]:
        """``(outcome, error kind)`` of an operation that raised *exc*."""
        if isinstance(exc, StateInDoubt):
            return "error", "in_doubt"
        if isinstance(exc, StateUnavailable):
            return "error", "unavailable"
        if self._cache:
            fault = FAULTS.kind
            if fault == "skipped":
                return "skipped", None
            if fault is not None:
                return "error", fault
        if isinstance(exc, (TypeError, ValueError)):
            return "invalid", None
        return "error", "other"

    def _finish(
        self,
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        sample: Sample,
        start_wall: float,
        span: Any,
        exc: BaseException | None,
    ) -> None:
        try:
            o = self._observer
            if span is not None and o.tracing is not None:
                o.tracing.finish(span, sample, exc)  # first: it ends the span
            if o.stats is not None:
                o.stats.record(self.name, self.resource, op, sample)
            if self._prom is not None:
                self._prom.record(op, sample)
            if o.record:
                if sample.hits or sample.misses:
                    detail = "hit" if not sample.misses else ("miss" if not sample.hits else
                             f"{sample.hits} hit, {sample.misses} miss")  # fmt: skip
                else:
                    detail = sample.error or ""
                key = recorder.key_label(op, args, kwargs)
                recorder.record(
                    recorder.RecordedOp(
                        self.name,
                        self.resource,
                        op,
                        key,
                        sample.seconds,
                        sample.outcome,
                        detail,
                        start_wall,
                    )
                )
        except Exception as failure:  # a side channel: never the operation's outcome
            _sink_failed(failure)


#: Seconds between two log lines about a failing metrics, tracing or recording sink.
SINK_LOG_INTERVAL = 60.0
_sink_next_log = 0.0


def _sink_failed(failure: Exception) -> None:
    """Log (at most once per :data:`SINK_LOG_INTERVAL`) a sink that raised:
    the operation itself succeeded or failed on its own, and keeps that outcome."""
    global _sink_next_log
    now = time.monotonic()
    if now >= _sink_next_log:
        _sink_next_log = now + SINK_LOG_INTERVAL
        log.warning(
            "flask-ploy observability failed (%s: %s); the operation's own result stands",
            type(failure).__name__,
            failure,
        )


def _watch_compute(
    args: tuple[Any, ...], kwargs: dict[str, Any], computed: list[bool]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Wrap ``get_or_set``'s *compute* to note that it ran (a miss)."""
    compute = args[1] if len(args) > 1 else kwargs.get("compute")
    if not callable(compute):
        return args, kwargs  # the binding raises TypeError

    def watched() -> Any:
        computed.append(True)
        return compute()

    if len(args) > 1:
        return (args[0], watched, *args[2:]), kwargs
    return args, {**kwargs, "compute": watched}


def _ok(
    op: str,
    cache: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    computed: list[bool],
    seconds: float,
) -> Sample:
    """The sample of an operation that returned *result*."""
    hits = misses = bytes_in = bytes_out = 0
    if op == "get_or_set" and cache:
        if computed:
            misses, bytes_out = 1, utf8_len(result)
        else:
            hits, bytes_in = 1, utf8_len(result)
    elif type(result) is str and op != "update":
        bytes_in = utf8_len(result)
        hits = 1 if cache and op in READS else 0
    elif result is None and cache and op in READS:
        misses = 1
    elif op == "get_many" and isinstance(result, dict):
        for value in result.values():
            if value is None:
                misses += 1
            else:
                hits += 1
                bytes_in += utf8_len(value)
        if not cache:
            hits = misses = 0
    if op in WRITES:
        index = WRITES[op]
        value = args[index] if len(args) > index else kwargs.get("new", kwargs.get("value"))
        bytes_out = utf8_len(value)
    elif op == "update" and type(result) is str:
        bytes_out = utf8_len(result)
    elif op == "set_many":
        mapping = args[0] if args else kwargs.get("mapping")
        if isinstance(mapping, dict):
            bytes_out = sum(utf8_len(v) for v in mapping.values())
    return Sample(seconds, "ok", None, hits, misses, bytes_in, bytes_out)


def make_observer(settings: Settings, debug: bool) -> Observer | None:
    """The observer *settings* ask for, or ``None`` when every feature is off.

    ``PLOY_RECORD_OPS = None`` (the default) records when *debug* (the
    app's ``debug``) is on.

    :raises PloyConfigError: ``PLOY_TRACING`` is on without ``opentelemetry-api``.
    """
    record = debug if settings.record_ops is None else settings.record_ops
    tracer: tracing.Tracing | None = None
    if settings.tracing:
        if not tracing.available():
            raise PloyConfigError(
                "app.config['PLOY_TRACING'] is on, but opentelemetry-api is not"
                " installed: pip install 'flask-ploy[tracing]' (and an SDK and"
                " exporter, e.g. opentelemetry-sdk), or turn PLOY_TRACING off"
            )
        tracer = tracing.Tracing(settings.tracing_keys)
    prom = False
    if settings.metrics:
        prom = prometheus.available()
        if not prom:
            log.warning(
                "flask-ploy: PLOY_METRICS is on but prometheus_client is not installed:"
                " ploy.stats() counts, but no Prometheus metrics are exported"
                " (pip install 'flask-ploy[metrics]')"
            )
    if not (settings.metrics or tracer or record):
        return None
    return Observer(stats=settings.metrics, prometheus=prom, tracing=tracer, record=record)
