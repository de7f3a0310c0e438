"""gunicorn settings for Prometheus's multiprocess mode.

    PROMETHEUS_MULTIPROC_DIR=/tmp/ploy-metrics \\
        gunicorn -w 4 -c example_app/gunicorn_prometheus.py 'example_app:create_app()'

Each worker writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR``
(set before gunicorn starts, an empty folder); ``/metrics`` merges them.
When a worker exits, its live gauges are dropped (flask-ploy has none: its
counters and histograms keep counting across worker restarts).
"""

from __future__ import annotations

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
