"""Seeing inside the bindings: counters, Prometheus metrics, OpenTelemetry
spans and per-request recording (see :doc:`/observability`).

- :mod:`~flask_ploy.observe.stats`: this process's counters (``ploy.stats()``).
- :mod:`~flask_ploy.observe.proxy`: the observed bindings ``g.env`` hands out.
- :mod:`~flask_ploy.observe.observer`: what times and counts each operation.
- :mod:`~flask_ploy.observe.recorder`: ``PLOY_RECORD_OPS``, :func:`get_recorded_ops`.
- :mod:`~flask_ploy.observe.prometheus`: the metrics, :func:`prometheus.exposition`.
- :mod:`~flask_ploy.observe.tracing`: the spans.
- :mod:`~flask_ploy.observe.toolbar`: the Flask-DebugToolbar panel.

With every feature off, ``g.env`` hands out the bindings themselves and
none of this runs.
"""

from __future__ import annotations

from .observer import BindingObserver, Observer, make_observer
from .proxy import unwrap
from .recorder import RecordedOp, get_recorded_ops

__all__ = [
    "BindingObserver",
    "Observer",
    "RecordedOp",
    "get_recorded_ops",
    "make_observer",
    "unwrap",
]
