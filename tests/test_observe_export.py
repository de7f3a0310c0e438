"""Prometheus metrics, OpenTelemetry spans and the debug-toolbar panel, on
real backends; multiprocess Prometheus under gunicorn with 2 workers."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import g
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from flask_ploy import StateUnavailable
from flask_ploy.observe.prometheus import METRICS, exposition

from . import servers
from .conftest import AppFactory

_exporter = InMemorySpanExporter()
_attached: list[object] = []


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Finished spans of this test (one SDK provider for the process, maybe
    set up by another test or a docs page: the exporter is added to it)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    if provider not in _attached:
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        _attached.append(provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_prometheus_counts_and_parses(make_app: AppFactory) -> None:
    binding = f"C{uuid.uuid4().hex[:8].upper()}"  # labels of this test alone
    app = make_app({"cache": {binding: "default"}}, PLOY_METRICS=True)
    with app.app_context():
        c = getattr(g.env, binding)
        c.set("secret-key-name", "v")
        c.get("secret-key-name")
        c.get("another-secret")
    labels = {"binding": binding, "resource": "default"}
    assert value("ploy_operations_total", **labels, op="get", outcome="ok") == 2
    assert value("ploy_cache_hits_total", **labels, op="get") == 1
    assert value("ploy_cache_misses_total", **labels, op="get") == 1
    assert value("ploy_operation_duration_seconds_count", **labels, op="set") == 1
    assert value("ploy_written_bytes_total", **labels) == 1
    body, content_type = exposition()
    assert content_type.startswith("text/plain")
    text = body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind, _ in METRICS:
        family = families[name.removesuffix("_total")]
        assert family.type == kind
    ours = [s for f in families.values() for s in f.samples if s.labels.get("binding") == binding]
    assert ours
    for sample in ours:  # no key name in any label
        assert set(sample.labels) <= {"binding", "resource", "op", "outcome", "kind", "le"}
    assert "secret" not in text


def test_spans_follow_the_semantic_conventions(
    make_app: AppFactory, spans: InMemorySpanExporter, state_table: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    app = make_app(
        PLOY_TRACING=True,
        PLOY_CACHE_URL=servers.REDIS_URL,
        PLOY_CACHE_KEY_PREFIX=prefix,
        PLOY_STATE_URL=servers.POSTGRES_URL,
        PLOY_STATE_TABLE=state_table,
    )
    servers.need(servers.redis_ok() and servers.sql_ok(servers.POSTGRES_URL), "Redis, PostgreSQL")
    with app.app_context():
        g.env.CACHE.set("k", "value-never-shown")
        g.env.CACHE.get("k")
        g.env.STATE.get("k")
    got = spans.get_finished_spans()
    assert [s.name for s in got] == ["set default", "get default", "get default"]
    cache_get, state_get = got[1], got[2]
    assert cache_get.kind == trace.SpanKind.CLIENT
    a = dict(cache_get.attributes or {})
    assert a["db.system"] == "redis" and a["db.operation.name"] == "get"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == 6379
    assert a["ploy.binding"] == "CACHE" and a["ploy.cache.hits"] == 1
    assert "ploy.key" not in a
    b = dict(state_get.attributes or {})
    assert b["db.system"] == "postgresql" and b["db.collection.name"] == state_table
    assert b["db.namespace"] == "test" and b["server.port"] == 5432
    for span in got:
        assert "value-never-shown" not in str(dict(span.attributes or {}))


def test_span_keys_only_when_asked_and_errors(
    make_app: AppFactory, spans: InMemorySpanExporter
) -> None:
    url = f"postgresql+psycopg://127.0.0.1:{servers.free_port()}/nowhere"
    app = make_app(
        PLOY_TRACING=True, PLOY_TRACING_KEYS=True, PLOY_STATE_URL=url, PLOY_STATE_BUSY_TIMEOUT=0.5
    )
    with app.app_context():
        g.env.CACHE.get("user:1")
        with pytest.raises(StateUnavailable):
            g.env.STATE.get("user:2")
    cache_span, state_span = spans.get_finished_spans()
    assert dict(cache_span.attributes or {})["db.system"] == "sqlite"
    assert dict(cache_span.attributes or {})["ploy.key"] == "user:1"
    assert state_span.status.status_code == trace.StatusCode.ERROR
    attrs = dict(state_span.attributes or {})
    assert attrs["error.type"] == "StateUnavailable" and attrs["ploy.key"] == "user:2"


def test_get_or_set_nests_the_computation(
    make_app: AppFactory, spans: InMemorySpanExporter
) -> None:
    app = make_app(PLOY_TRACING=True)
    with app.app_context():
        g.env.CACHE.get_or_set("k", lambda: g.env.STATE.get("k") or "computed")
    names = {s.name: s for s in spans.get_finished_spans()}
    outer, inner = names["get_or_set default"], names["get default"]
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


def test_toolbar_panel_lists_the_requests_ops(make_app: AppFactory) -> None:
    from flask_debugtoolbar import DebugToolbarExtension

    app = make_app(
        DEBUG=True,
        SECRET_KEY="x",
        DEBUG_TB_INTERCEPT_REDIRECTS=False,
        DEBUG_TB_PANELS=["flask_ploy.observe.toolbar.PloyPanel"],
    )

    @app.get("/")
    def page() -> str:
        g.env.CACHE.get("toolbar-key")
        g.env.STATE.set("toolbar-key", "v")
        return "<html><body><p>page</p></body></html>"

    DebugToolbarExtension(app)
    html = app.test_client().get("/").get_data(as_text=True)
    assert "flDebugPloyPanel" in html
    assert "toolbar-key" in html and "miss" in html
    assert "2 operations" in html


def test_multiprocess_metrics_under_gunicorn(tmp_path: Path) -> None:
    """Two workers; /metrics merges both workers' counts."""
    folder = tmp_path / "prom"
    folder.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "FLASK_PLOY_CACHE_URL": f"sqlite:///{tmp_path}/cache.sqlite3",
        "FLASK_PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
    }
    conf = str(Path(__file__).parent.parent / "example_app" / "gunicorn_prometheus.py")
    with servers.gunicorn(tmp_path, env, "-w", "2", "-c", conf) as (base, _):
        sent = 0
        with ThreadPoolExecutor(8) as pool:  # concurrent, so both workers get some
            while len(list(folder.glob("counter_*.db"))) < 2 and sent < 400:
                statuses = list(pool.map(
                    lambda _: servers.http_json(base, "/cache/get?key=some-key")[0], range(40)
                ))  # fmt: skip
                assert statuses == [200] * 40
                sent += 40
        assert len(list(folder.glob("counter_*.db"))) == 2, "both workers counted"
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:  # noqa: S310
            text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    total = sum(
        s.value
        for s in families["ploy_operations"].samples
        if s.name == "ploy_operations_total" and s.labels.get("op") == "get"
    )
    assert total == sent  # the two workers' counts, merged


def test_iterator_spans_end_when_the_iteration_does(
    make_app: AppFactory, spans: InMemorySpanExporter
) -> None:
    """items/entries return generators: their span covers the iteration and
    carries its outcome (it ended before the first row was read)."""
    app = make_app(PLOY_TRACING=True)
    with app.app_context():
        g.env.STATE.set_many({"a": "1", "b": "2"})
        spans.clear()
        listing = g.env.STATE.items()
        assert not [s for s in spans.get_finished_spans() if s.name == "items default"]
        assert dict(listing) == {"a": "1", "b": "2"}
        (span,) = [s for s in spans.get_finished_spans() if s.name == "items default"]
        assert dict(span.attributes or {})["ploy.outcome"] == "ok"


def test_a_failing_metrics_sink_never_fails_the_operation(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR names a folder that does not exist: every
    prometheus_client write raises, after the operation was done. The
    operations return as usual, and one warning says why."""
    code = (
        "from flask import Flask, g\n"
        "from flask_ploy import FlaskPloy\n"
        "import sys\n"
        "app = Flask('m', root_path=sys.argv[1], instance_path=sys.argv[1])\n"
        "app.config.update(PLOY_BINDINGS={'cache': {'CACHE': 'default'},"
        " 'state': {'STATE': 'default'}}, PLOY_METRICS=True, TESTING=True)\n"
        "FlaskPloy(app)\n"
        "with app.app_context():\n"
        "    g.env.STATE.set('k', 'v'); print(g.env.STATE.incr('n'), g.env.STATE.get('k'))\n"
        "    g.env.CACHE.set('c', 'x'); print(g.env.CACHE.get('c'))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "v", "x"]
    assert done.stderr.count("observability failed") == 1, done.stderr
