"""Dump and load of a whole State resource, one process per run (peak RSS).

``python -m bench.dumpload make FILE N``
    Write N ``{"key": ..., "value": ...}`` JSON lines to FILE (untimed).
``python -m bench.dumpload load URL FILE OUT.json``
    Load FILE into the ``default`` resource at URL with ``State.load``
    (replacing it), streaming the lines; write the timings to OUT.json.
``python -m bench.dumpload dump URL FILE OUT.json``
    Write every pair of the resource to FILE as JSON lines with
    ``State.items()``; write the timings to OUT.json.

Each run reports seconds, keys per second, and the process's RSS before
the operation and at its peak (``ru_maxrss``), so a dump or load that
buffers the data shows up as a peak that grows with the key count.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

VALUE_LEN = 64


def key(i: int) -> str:
    """The i-th key of the growth datasets (sorted by i)."""
    return f"k{i:08d}"


def make(path: str, n: int) -> None:
    value = "v" * VALUE_LEN
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"key": key(i), "value": value}))
            f.write("\n")


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="utf-8") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _app(url: str) -> Any:
    from flask import Flask

    from flask_ploy import FlaskPloy

    app = Flask("bench_dumpload", root_path=tempfile.gettempdir())
    app.config.update(PLOY_BINDINGS={"state": {"STATE": "default"}}, PLOY_STATE_URL=url)
    FlaskPloy(app)
    return app


def _pairs(path: str) -> Iterator[tuple[str, str]]:
    loads = json.loads
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = loads(line)
            yield d["key"], d["value"]


def run(op: str, url: str, path: str) -> dict[str, Any]:
    from flask import g

    app = _app(url)
    with app.app_context():
        st = g.env.STATE
        st.count()  # connect and create the table before timing
        before = _rss_mb()
        t0 = time.perf_counter()
        if op == "load":
            n = st.load(_pairs(path), replace=True)
        else:
            n = 0
            dumps = json.dumps
            with open(path, "w", encoding="utf-8") as f:
                for k, v in st.items():
                    f.write(dumps({"key": k, "value": v}))
                    f.write("\n")
                    n += 1
        seconds = time.perf_counter() - t0
    return {
        "op": op,
        "keys": n,
        "seconds": seconds,
        "keys_per_s": n / seconds if seconds else 0.0,
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
        "via": "State.load" if op == "load" else "State.items",
    }


def main(argv: list[str]) -> int:
    if argv[0] == "make":
        make(argv[1], int(argv[2]))
        return 0
    op, url, path, out = argv
    result = run(op, url, path)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
