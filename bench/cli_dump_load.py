"""Throughput and peak memory of ``flask ploy state dump`` and ``load``.

``python bench/cli_dump_load.py [--keys N] [--url URL]``

Writes N JSON lines (keys ``k00000000``..., 64-character values), then runs
each command as its own ``flask`` process on a State on SQLite (or *URL*),
and reports wall time, keys per second and the child's peak RSS
(``ru_maxrss`` from ``wait4``; it counts the forked image of this script
before ``exec`` too, so this script never holds the data). It checks that
the dump is byte-identical to the loaded file. Not part of the test suite;
the numbers are quoted in docs/cli.rst.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = """
from flask import Flask
from flask_ploy import FlaskPloy

app = Flask(__name__)
app.config["PLOY_BINDINGS"] = {{"state": {{"STATE": "default"}}}}
app.config["PLOY_STATE_URL"] = {url!r}
FlaskPloy(app)
"""


def make_file(path: Path, n: int) -> None:
    value = "v" * 48 + "é😀-0123456789"  # 64 characters, some of them not ASCII
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"key": f"k{i:08d}", "value": value}, ensure_ascii=False))
            f.write("\n")


def run(folder: Path, *args: str, stdout: int = subprocess.DEVNULL) -> tuple[float, float]:
    """Run ``flask ploy ARGS`` in *folder*; return (seconds, peak RSS in MB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "benchapp", "ploy", *args],
        cwd=folder,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        raise SystemExit(f"flask ploy {' '.join(args)} failed: {err.decode()}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--url", default=None, help="state URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    n = args.keys
    with tempfile.TemporaryDirectory(prefix="ploy-cli-bench-") as tmp:
        folder = Path(tmp)
        url = args.url or f"sqlite:///{folder / 'state.sqlite3'}"
        (folder / "benchapp.py").write_text(APP.format(url=url))
        data = folder / "data.jsonl"
        make_file(data, n)
        size = data.stat().st_size / 2**20
        print(f"{n:,} keys, {size:.0f} MiB of JSON Lines, state on {url.split(':')[0]}")
        print(f"{'command':<42} {'seconds':>8} {'keys/s':>10} {'peak RSS':>10}")

        def report(label: str, seconds: float, rss: float) -> None:
            print(f"{label:<42} {seconds:8.1f} {n / seconds:10,.0f} {rss:7.0f} MB")

        base_s, base_rss = run(folder, "state", "list", "STATE", "--limit", "1")
        print(f"{'(baseline: state list --limit 1)':<42} {base_s:8.1f} {'':>10} {base_rss:7.0f} MB")
        report(
            "state load --replace FILE",
            *run(folder, "state", "load", "STATE", str(data), "--replace"),
        )
        out = folder / "out.jsonl"
        report("state dump -o FILE", *run(folder, "state", "dump", "STATE", "-o", str(out)))
        if not filecmp.cmp(out, data, shallow=False):
            raise SystemExit("the dump differs from the loaded file")
        with open(os.devnull, "wb") as null:
            report(
                "state dump > /dev/null",
                *run(folder, "state", "dump", "STATE", stdout=null.fileno()),
            )
        out_json = folder / "out.json"
        report(
            "state dump --format json -o FILE",
            *run(folder, "state", "dump", "STATE", "--format", "json", "-o", str(out_json)),
        )
        report(
            "state load --replace FILE (JSON array)",
            *run(folder, "state", "load", "STATE", str(out_json), "--replace"),
        )
        report(
            "state load --dry-run FILE",
            *run(folder, "state", "load", "STATE", str(data), "--dry-run"),
        )


if __name__ == "__main__":
    main()
