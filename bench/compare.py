"""Compare the hot path of two checkouts, interleaved: ``python -m bench.compare BASE``.

    python -m bench.compare /path/to/base-checkout            # cache + state_sqlite
    python -m bench.compare ../base --passes 5 --rounds 31 --groups state_sqlite

Runs the given bench groups alternately in *BASE* and in this checkout
(random order within each pass, each run a fresh process with that
checkout's ``flask_ploy`` first on ``sys.path``), then prints, per operation,
the median over passes of each checkout's per-round ratio against the raw
driver, and ``this / base``. A hot-path change is within budget when that
last column stays under 1.02.

Make a base checkout with ``git worktree add ../base <commit>``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ROWS = ("flask-ploy (binding)", "flask-ploy (g.env)")
OPS = ("get", "set", "incr", "delete")


def run(tree: str, groups: str, rounds: int, ops: int) -> dict[str, dict[str, float]]:
    """One bench run in *tree*; ``{group.op: {row: paired_ratio}}``."""
    with tempfile.TemporaryDirectory(prefix="ploy-compare-") as out:
        env = {**os.environ, "PYTHONPATH": tree}
        subprocess.run(
            [sys.executable, "-m", "bench", "--groups", groups, "--rounds", str(rounds),
             "--ops", str(ops), "--out", out, "--charts", out],
            cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            results = json.load(f)["groups"]
    found: dict[str, dict[str, float]] = {}
    for group, table in results.items():
        for op in OPS:
            entry = table.get(op) if isinstance(table, dict) else None
            if not isinstance(entry, dict) or "results" not in entry:
                continue
            found[f"{group}.{op}"] = {
                row: entry["results"][row]["paired_ratio"]
                for row in ROWS
                if row in entry["results"]
            }
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    p.add_argument("base", help="the other checkout (a git worktree of the base commit)")
    p.add_argument("--groups", default="cache,state_sqlite")
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--ops", type=int, default=200)
    args = p.parse_args(argv)
    trees = {"base": os.path.abspath(args.base), "this": ROOT}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {"base": {}, "this": {}}
    for n in range(args.passes):
        order = list(trees)
        random.shuffle(order)
        for name in order:
            print(f"pass {n + 1}/{args.passes}: {name}", file=sys.stderr, flush=True)
            for op, rows in run(trees[name], args.groups, args.rounds, args.ops).items():
                for row, ratio in rows.items():
                    samples[name].setdefault(op, {}).setdefault(row, []).append(ratio)
    print(f"{'operation':<22}{'row':<24}{'base':>8}{'this':>8}{'this/base':>11}")
    for op in sorted(samples["this"]):
        for row in ROWS:
            a = samples["base"].get(op, {}).get(row)
            b = samples["this"][op].get(row)
            if not a or not b:
                continue
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"{op:<22}{row:<24}{ma:>8.3f}{mb:>8.3f}{mb / ma:>11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
