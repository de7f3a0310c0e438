"""The flask-ploy example app: every pattern of Ploy's Cache and State docs
as a Flask endpoint, and the better ways flask-ploy adds beside them.

Run it::

    make run                                    # SQLite cache and state, in instance/
    FLASK_PLOY_CACHE_URL=redis://127.0.0.1:6379/0 make run
    gunicorn -w 4 -b 127.0.0.1:8000 'example_app:create_app()'

Settings come from the environment as Flask reads them,
``app.config.from_prefixed_env()``: ``FLASK_PLOY_CACHE_URL`` sets
``PLOY_CACHE_URL``, ``FLASK_SECRET_KEY`` sets ``SECRET_KEY``.

Modules:

- :mod:`example_app.basics`: get/set/delete on any binding as JSON (what a
  load test hits), and the seed docs' "Basic Example" workers.
- :mod:`example_app.patterns`: the seed docs' "Common Patterns", each beside
  the atomic version flask-ploy makes possible.
- :mod:`example_app.page`: an HTML page showing counters, flags and
  preferences, with forms to change them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from flask_ploy import CacheUnavailable, FlaskPloy, StateUnavailable
from flask_ploy.observe import prometheus

log = logging.getLogger(__name__)

#: One extension object for every app the factory makes (tests make many).
ploy = FlaskPloy()

HERE = os.path.dirname(os.path.abspath(__file__))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Make the example app.

    Settings, later ones winning: the defaults below, then every
    ``FLASK_*`` environment variable (``FLASK_PLOY_CACHE_URL``,
    ``FLASK_PLOY_STATE_URL``, ``FLASK_SECRET_KEY``...), then *config*, so a
    test's settings win over the shell's. Without URLs, the cache and State
    are SQLite files in ``example_app/instance/``, which gunicorn's workers,
    the reloader and ``flask --app example_app ploy`` commands share.
    """
    app = Flask(__name__, instance_path=os.path.join(HERE, "instance"))
    app.config.from_mapping(
        # Signs the flash messages of the page. Set FLASK_SECRET_KEY in production.
        SECRET_KEY="dev",  # noqa: S106 (a development default; set FLASK_SECRET_KEY)
        # How long the "expensive report" takes to compute, in seconds.
        REPORT_SECONDS=0.5,
        # The atomic rate limiter: RATE_LIMIT requests per RATE_WINDOW seconds.
        RATE_LIMIT=5,
        RATE_WINDOW=10,
    )
    # Counters per binding and operation, and Prometheus metrics at /metrics,
    # when prometheus_client is installed (pip install 'flask-ploy[metrics]');
    # FLASK_PLOY_METRICS=false in the environment turns them off.
    app.config.setdefault("PLOY_METRICS", prometheus.available())
    # FLASK_PLOY_CACHE_URL=redis://... sets PLOY_CACHE_URL; values that are
    # JSON are parsed (FLASK_PLOY_CACHE_COOLDOWN=2 is a number).
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)

    if app.config.get("PLOY_TRACING"):
        _console_tracing()
    ploy.init_app(app)  # reads example_app/ploy.yaml

    from . import basics, page, patterns

    app.register_blueprint(basics.bp)
    app.register_blueprint(patterns.bp)
    app.register_blueprint(page.bp)
    _register_error_handlers(app)
    if app.config["PLOY_METRICS"] and prometheus.available():
        app.add_url_rule("/metrics", "metrics", _metrics)
    return app


def _console_tracing() -> None:
    """FLASK_PLOY_TRACING=true: print each span on stdout, if the
    OpenTelemetry SDK is installed and the app has set up no tracing of its
    own. A real app configures an exporter to its tracing backend instead."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        return
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def _metrics() -> ResponseReturnValue:
    """The Prometheus scrape: every gunicorn worker's metrics when
    PROMETHEUS_MULTIPROC_DIR is set (see docs/observability.rst)."""
    body, content_type = prometheus.exposition(request.headers.get("Accept"))
    return body, 200, {"Content-Type": content_type}


def _register_error_handlers(app: Flask) -> None:
    """Errors as JSON with the right status: never a bare 500 for a known case."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        return {"error": exc.description}, exc.code or 500

    @app.errorhandler(ValueError)
    def bad_argument(exc: ValueError) -> ResponseReturnValue:
        # The bindings raise ValueError for a key they refuse (empty, over
        # 512 bytes) and incr() for a value that is not an integer. Keys and
        # values come from the request here, so that is the client's error.
        return {"error": str(exc)}, 400

    @app.errorhandler(StateUnavailable)
    def state_down(exc: StateUnavailable) -> ResponseReturnValue:
        # State is durable storage: without it we cannot answer, but we can
        # say so. The message names the database with its password masked.
        log.error("%s", exc)
        return {"error": "the state database is unavailable; try again later"}, 503

    @app.errorhandler(CacheUnavailable)
    def cache_down(exc: CacheUnavailable) -> ResponseReturnValue:
        # Only reached with PLOY_CACHE_ON_ERROR = "raise": by default a cache
        # outage reads as misses, and the views below handle incr()/add().
        log.error("%s", exc)
        return {"error": "the cache is unavailable; try again later"}, 503
