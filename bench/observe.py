"""The cost of each observability feature on the hot path: group ``observe``.

One app per setting (everything off; ``PLOY_METRICS`` with Prometheus;
``PLOY_TRACING`` with the OpenTelemetry SDK recording spans, exported
nowhere; ``PLOY_RECORD_OPS``; all three), on one SQLite cache file and one
SQLite State file, timed in interleaved rounds through ``g.env``-obtained
bindings. Ratios are per round against "off", medians over rounds.

    python -m bench --groups observe --quick        # through the runner
    python -m bench.observe                         # alone, prints a table
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from flask import Flask, g

from ._harness import Plan, Run, interleave, summarize

VALUE = "v" * 64
SETTINGS: dict[str, dict[str, Any]] = {
    "off": {},
    "metrics": {"PLOY_METRICS": True},
    "tracing": {"PLOY_TRACING": True},
    "record": {"PLOY_RECORD_OPS": True},
    "all": {"PLOY_METRICS": True, "PLOY_TRACING": True, "PLOY_RECORD_OPS": True},
}


def _tracer_provider() -> None:
    """Spans recorded by the SDK (sampled, attributes kept), exported nowhere."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def _ops(binding: Any) -> dict[str, Run]:
    def get(ks: Sequence[str]) -> None:
        for k in ks:
            binding.get(k)

    def set_(ks: Sequence[str]) -> None:
        for k in ks:
            binding.set(k, VALUE)

    return {"get": get, "set": set_}


def observe_group(cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"cache.get": {...}, "cache.set": ..., "state.get": ..., "state.set": ...}``."""
    from flask_ploy import FlaskPloy

    _tracer_provider()
    tmp = cfg["tmp"]
    keys = [f"k{i:05d}" for i in range(1000)]
    contexts = []
    bindings: dict[str, dict[str, Any]] = {}
    for name, settings in SETTINGS.items():
        app = Flask(f"bench_observe_{name}", root_path=tmp)
        app.config.update(
            PLOY_BINDINGS={"cache": {"CACHE": "default"}, "state": {"STATE": "default"}},
            PLOY_CACHE_URL=f"sqlite:///{os.path.join(tmp, 'observe-cache.sqlite3')}",
            PLOY_STATE_URL=f"sqlite:///{os.path.join(tmp, 'observe-state.sqlite3')}",
            PLOY_STATE_TABLE="observe_state",
            **settings,
        )
        FlaskPloy(app)
        ctx = app.app_context()
        ctx.push()
        contexts.append(ctx)
        bindings[name] = {"cache": g.env.CACHE, "state": g.env.STATE}
    try:
        for k in keys:
            bindings["off"]["cache"].set(k, VALUE)
            bindings["off"]["state"].set(k, VALUE)
        p = cfg["plan"]
        plan = Plan(rounds=p["rounds"], ops=p["ops"], warmup=p["warmup"])
        out: dict[str, Any] = {}

        def forget_recorded() -> None:
            g.pop("_ploy_recorded_ops", None)  # each round a fresh "request"

        for kind in ("cache", "state"):
            for op in ("get", "set"):
                contenders = {name: _ops(b[kind])[op] for name, b in bindings.items()}
                samples = interleave(
                    contenders, lambda r: keys[: plan.ops], plan, between=forget_recorded
                )
                out[f"{kind}.{op}"] = {
                    "baseline": "off",
                    "ops": plan.ops,
                    "results": summarize(samples, "off"),
                }
        return out
    finally:
        for ctx in reversed(contexts):
            ctx.pop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ploy-bench-observe-") as tmp:
        cfg = {"tmp": tmp, "plan": {"rounds": 31, "ops": 500, "warmup": 3}}
        out = observe_group(cfg)
    names = list(SETTINGS)
    print(f"{'operation':<12}" + "".join(f"{n:>10}" for n in names) + "   (ns/op; x off)")
    for op, entry in out.items():
        r = entry["results"]
        cells = [f"{r[n]['median_ns']:>10.0f}" for n in names]
        print(f"{op:<12}" + "".join(cells))
        print(" " * 12 + "".join(f"{r[n].get('paired_ratio', 1.0):>9.2f}x" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
