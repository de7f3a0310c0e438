"""``python -m bench``: run the benchmark suite and write the report.

    python -m bench              # the full run (~15 min): bench/results/, docs/bench/
    python -m bench --quick      # a 1-2 minute smoke run, into a temporary folder
    python -m bench --groups cache,state_sqlite --rounds 51

Every group runs in a process of its own (see :mod:`bench.groups`). Data
goes to a temporary folder, removed at the end unless ``--keep``. Results
go to ``results.json`` (raw), ``results.md`` (Markdown tables), ``*.rst``
fragments (included by docs/performance.rst) and PNG charts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

from . import _harness, report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ALL_GROUPS = ["cache", "state_sqlite", "state_postgres", "state_mariadb", "dumpload", "growth",
              "profile", "http", "stampede", "observe"]  # fmt: skip
NEEDS = {
    "cache": {"redis"},
    "state_postgres": {"postgres"},
    "state_mariadb": {"mariadb"},
    "profile": {"redis"},
    "http": {"redis", "wrk"},
    "stampede": {"redis", "wrk"},
}

FULL = {"rounds": 101, "ops": 200, "warmup": 5, "dataset": 10_000, "cli": True,
        "sizes": [1_000, 100_000, 1_000_000], "http_seconds": 2, "http_rounds": 12,
        "rmw_seconds": 2.0, "stampede_seconds": 60, "stampede_cold_rounds": 5}  # fmt: skip
QUICK = {"rounds": 21, "ops": 100, "warmup": 3, "dataset": 2_000, "cli": False,
         "sizes": [1_000, 10_000, 100_000], "http_seconds": 2, "http_rounds": 1,
         "rmw_seconds": 0.3, "stampede_seconds": 10, "stampede_cold_rounds": 1}  # fmt: skip


def _port_open(url: str) -> bool:
    parts = urlsplit(url)
    with (
        contextlib.suppress(OSError),
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1.0),
    ):
        return True
    return False


def available(redis_url: str, pg_url: str, mariadb_url: str = "") -> dict[str, bool]:
    """Which services and tools this machine has."""
    return {
        "redis": _port_open(redis_url.replace("redis://", "http://")),
        "postgres": _port_open(pg_url.replace("postgresql+psycopg://", "http://")),
        "mariadb": bool(mariadb_url) and _port_open("http://" + mariadb_url.split("://", 1)[-1]),
        "wrk": shutil.which("wrk") is not None,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (1-2 minutes)")
    p.add_argument("--groups", default=",".join(ALL_GROUPS), help="comma-separated groups")
    p.add_argument("--rounds", type=int, help="kept rounds per measurement")
    p.add_argument("--ops", type=int, help="operations per round")
    p.add_argument("--warmup", type=int, help="untimed rounds first")
    p.add_argument("--dataset", type=int, help="keys in the per-op datasets")
    p.add_argument("--sizes", help="dataset sizes of the growth curves, e.g. 1000,100000")
    p.add_argument("--http-seconds", type=float, help="seconds per wrk run")
    p.add_argument("--http-rounds", type=int, help="wrk runs per route and app")
    p.add_argument("--stampede-seconds", type=int, help="seconds of load on the hot key")
    p.add_argument(
        "--rmw-seconds", type=float, help="seconds per contended read-modify-write measurement"
    )
    p.add_argument(
        "--no-http-warmup", action="store_true", help="skip the untimed wrk run per route and app"
    )
    p.add_argument("--out", help="results folder (default: bench/results; --quick: a temp dir)")
    p.add_argument("--charts", help="charts folder (default: docs/bench; --quick: --out)")
    p.add_argument("--keep", action="store_true", help="keep the data folder")
    p.add_argument(
        "--no-cli", action="store_true", help="skip bench/cli_dump_load.py in the dumpload group"
    )
    p.add_argument(
        "--redis-url", default=os.environ.get("PLOY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "PLOY_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
        ),
    )
    p.add_argument(
        "--mariadb-url",
        default=os.environ.get(
            "PLOY_TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/test"
        ),
    )
    p.add_argument(
        "--strict", action="store_true", help="fail, not skip, when a service is missing"
    )
    p.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite the tables and charts from a results.json",
    )
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    s = dict(QUICK if args.quick else FULL)
    for name in ("rounds", "ops", "warmup", "dataset", "http_seconds", "http_rounds",
                 "rmw_seconds", "stampede_seconds"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            s[name] = value
    if args.sizes:
        s["sizes"] = sorted(int(x) for x in args.sizes.split(","))
    return s


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _subprocess(args: list[str]) -> None:
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def run_group(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one group of :mod:`bench.groups` in a fresh process."""
    cfg_path = os.path.join(cfg["tmp"], f"{name}.config.json")
    out_path = os.path.join(cfg["tmp"], f"{name}.result.json")
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    _subprocess(["-m", "bench.groups", name, cfg_path, out_path])
    with open(out_path, encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def datasets(cfg: dict[str, Any]) -> dict[str, Any]:
    """Make, load and dump the growth datasets; each load and dump in its own process."""
    tmp = cfg["tmp"]
    out: dict[str, Any] = {"load": {}, "dump": {}, "files": {}}
    for size in cfg["sizes"]:
        src = os.path.join(tmp, f"src-{size}.jsonl")
        db = os.path.join(tmp, f"growth-{size}.sqlite3")
        url = f"sqlite:///{db}"
        _subprocess(["-m", "bench.dumpload", "make", src, str(size)])
        for op, path in (("load", src), ("dump", os.path.join(tmp, f"dump-{size}.jsonl"))):
            res = os.path.join(tmp, f"{op}-{size}.json")
            _subprocess(["-m", "bench.dumpload", op, url, path, res])
            with open(res, encoding="utf-8") as f:
                out[op][str(size)] = json.load(f)
        os.remove(src)
        os.remove(os.path.join(tmp, f"dump-{size}.jsonl"))
        out["files"][str(size)] = db
        _log(
            f"  {size} keys: load {out['load'][str(size)]['keys_per_s']:,.0f}/s,"
            f" dump {out['dump'][str(size)]['keys_per_s']:,.0f}/s"
        )
    if cfg["cli"] and os.path.exists(os.path.join(HERE, "cli_dump_load.py")):
        out["cli"] = cli_dump_load(max(cfg["sizes"]))
    return out


CLI_ROW = re.compile(r"^(\S.*?)\s+([\d.]+)\s+([\d,]+)\s+(\d+) MB$")


def cli_dump_load(n: int) -> dict[str, Any]:
    """Run bench/cli_dump_load.py (``flask ploy state dump/load``) and parse its table."""
    _log(f"  bench/cli_dump_load.py --keys {n}")
    text = subprocess.run(
        [sys.executable, os.path.join(HERE, "cli_dump_load.py"), "--keys", str(n)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = []
    for line in text.splitlines():
        m = CLI_ROW.match(line)
        if m:
            rows.append({
                "command": m.group(1),
                "seconds": float(m.group(2)),
                "keys_per_s": m.group(3),
                "peak_rss_mb": float(m.group(4)),
            })  # fmt: skip
    return {"keys": n, "rows": rows, "output": text}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            results = json.load(f)
        out_dir = args.out or os.path.dirname(os.path.abspath(args.render))
        charts_dir = args.charts or (out_dir if args.out else os.path.join(ROOT, "docs", "bench"))
        for path in report.write(results, out_dir, charts_dir):
            _log(f"wrote {os.path.relpath(path)}")
        return 0
    s = settings(args)
    groups = [x.strip() for x in args.groups.split(",") if x.strip()]
    unknown = set(groups) - set(ALL_GROUPS)
    if unknown:
        print(f"unknown groups: {', '.join(sorted(unknown))}; known: {', '.join(ALL_GROUPS)}")
        return 2
    have = available(args.redis_url, args.pg_url, args.mariadb_url)
    skipped: dict[str, str] = {}
    for name in list(groups):
        missing = sorted(x for x in NEEDS.get(name, set()) if not have[x])
        if missing:
            if args.strict:
                print(f"group {name} needs {', '.join(missing)}, which is not available")
                return 1
            skipped[name] = f"{', '.join(missing)} not available"
            groups.remove(name)
    if args.out:
        out_dir = args.out
    elif args.quick:
        out_dir = tempfile.mkdtemp(prefix="ploy-bench-quick-")
    else:
        out_dir = os.path.join(HERE, "results")
    charts_dir = args.charts or (
        out_dir if args.quick or args.out else os.path.join(ROOT, "docs", "bench")
    )
    tmp = tempfile.mkdtemp(prefix="ploy-bench-data-")
    tag = f"bench{os.getpid()}"
    cfg: dict[str, Any] = {
        "plan": {"rounds": s["rounds"], "ops": s["ops"], "warmup": s["warmup"]},
        "dataset": s["dataset"],
        "many_sizes": [1, 10, 100],
        "sizes": s["sizes"],
        "http_seconds": s["http_seconds"],
        "http_rounds": s["http_rounds"],
        "http_warmup": not args.no_http_warmup,
        "stampede_seconds": s["stampede_seconds"],
        "stampede_cold_rounds": s["stampede_cold_rounds"],
        "cli": s["cli"] and not args.no_cli,
        "redis_url": args.redis_url,
        "pg_url": args.pg_url,
        "mariadb_url": args.mariadb_url,
        "rmw_seconds": s["rmw_seconds"],
        "tmp": tmp,
        "tag": tag,
    }
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "settings": {k: v for k, v in cfg.items() if k not in ("tmp", "tag")},
        "machine": _harness.machine(),
        "versions": _harness.versions(),
        "skipped": skipped,
        "groups": {},
    }
    results["versions"].update(report.server_versions(args.redis_url, args.pg_url, have))
    started = time.monotonic()
    try:
        for name in groups:
            t0 = time.monotonic()
            _log(f"{name} ...")
            if name == "dumpload":
                results["groups"]["dumpload"] = datasets(cfg)
            elif name == "growth":
                if "dumpload" not in results["groups"]:
                    results["groups"]["dumpload"] = datasets(cfg)
                gcfg = {**cfg, "files": results["groups"]["dumpload"]["files"]}
                results["groups"]["growth"] = run_group("growth", gcfg)
            elif name == "stampede":
                from . import stampede

                results["groups"]["stampede"] = stampede.run(cfg)
            elif name == "http":
                from . import http_bench

                results["groups"]["http"] = http_bench.run(cfg)
                results["groups"]["http"]["in_process"] = run_group("http_app", cfg)
            else:
                results["groups"][name] = run_group(name, cfg)
            _log(f"{name} done in {time.monotonic() - t0:.0f} s")
    finally:
        if have.get("redis"):
            _harness.forget_redis_keys(args.redis_url, tag)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _log(f"data kept in {tmp}")
    if "dumpload" in results["groups"]:
        results["groups"]["dumpload"].pop("files", None)
    results["seconds"] = round(time.monotonic() - started)
    paths = report.write(results, out_dir, charts_dir)
    for path in paths:
        _log(f"wrote {os.path.relpath(path)}")
    for name, why in skipped.items():
        _log(f"skipped {name}: {why}")
    print(report.summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
