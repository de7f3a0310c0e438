"""The benchmark suite still runs: ``python -m bench --quick`` on tiny sizes.

No timing is asserted: this proves the code of every group works (against
the real Redis, PostgreSQL, gunicorn and wrk) and that the report, the
reST fragments and the charts are written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import servers

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_bench_runs_every_group(tmp_path: Path) -> None:
    servers.need(servers.redis_ok(), f"Redis at {servers.REDIS_URL}")
    servers.need(servers.sql_ok(servers.POSTGRES_URL), f"PostgreSQL at {servers.POSTGRES_URL}")
    servers.need(servers.sql_ok(servers.MARIADB_URL), f"MariaDB at {servers.MARIADB_URL}")
    servers.need(shutil.which("wrk") is not None, "wrk")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--strict", "--rounds", "2", "--ops", "5",
         "--warmup", "1", "--dataset", "120", "--sizes", "50,200", "--http-seconds", "1",
         "--http-rounds", "1", "--no-http-warmup", "--no-cli", "--stampede-seconds", "2",
         "--out", str(out),
         "--redis-url", servers.REDIS_URL, "--pg-url", servers.POSTGRES_URL,
         "--mariadb-url", servers.MARIADB_URL, "--rmw-seconds", "0.1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["skipped"] == {}
    assert set(results["groups"]) == {
        "cache", "state_sqlite", "state_postgres", "state_mariadb", "dumpload", "growth",
        "profile", "http", "stampede", "observe",
    }  # fmt: skip
    state = results["groups"]["state_sqlite"]
    assert set(state["get"]["results"]) == {
        "sqlite3", "diskcache", "flask-ploy (binding)", "flask-ploy (g.env)",
        "Flask-SQLAlchemy ORM",
    }  # fmt: skip
    for group in ("state_sqlite", "state_postgres", "state_mariadb"):
        rmw = results["groups"][group]["read_modify_write"]
        assert set(rmw["alone"]["results"]) == {
            "incr", "replace loop", "transact", "get + set (loses updates)",
        }  # fmt: skip
        for name in ("incr", "replace loop", "transact"):
            assert rmw["contended"]["results"][name]["lost"] == 0, (group, name)
    for name, route in results["groups"]["http"]["routes"].items():
        assert route["flask-ploy"]["errors"] == 0
        assert route["hand-written"]["errors"] == 0
        assert route["flask-ploy"]["rps"] > 0
        if name.startswith("cache"):  # the SQLite cache's app too
            assert route["flask-ploy, SQLite cache"]["errors"] == 0
    assert results["groups"]["stampede"]["cold"]["ploy"]["computations"] == [1]
    assert all(h["errors"] == 0 for h in results["groups"]["stampede"]["hot"].values())
    assert results["groups"]["dumpload"]["load"]["200"]["keys"] == 200
    assert results["groups"]["dumpload"]["dump"]["200"]["keys"] == 200
    md = (out / "results.md").read_text()
    assert "## Targets" in md
    assert "| flask-ploy (g.env) |" in md
    for name in ("targets", "ops_cache", "ops_state_sqlite", "http", "growth", "profile_state",
                 "rmw", "ops_cache_embedded", "get_or_set", "stampede"):  # fmt: skip
        assert (out / f"{name}.rst").read_text().startswith(".. list-table::")
    for chart in ("ops", "http", "growth", "profile"):
        assert (out / f"{chart}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
