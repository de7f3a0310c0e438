"""PNG charts of the results (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {
    "flask-ploy (binding)": "#2b6cb0",
    "flask-ploy (g.env)": "#63b3ed",
    "flask-ploy": "#2b6cb0",
    "redis-py": "#555555",
    "sqlite3": "#555555",
    "psycopg": "#555555",
    "hand-written": "#555555",
    "Flask-Caching": "#d69e2e",
    "diskcache": "#38a169",
    "Flask-SQLAlchemy ORM": "#c53030",
}
TITLES = {"cache": "Cache on Redis", "state_sqlite": "State on SQLite",
          "state_postgres": "State on PostgreSQL"}  # fmt: skip


def _bars(ax: Any, groups: dict[str, dict[str, Any]], ylabel: str, log: bool = False) -> None:
    """Grouped bars: one group per key of *groups*, one bar per contender."""
    names: list[str] = []
    for d in groups.values():
        names += [n for n in d if n not in names]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, d in enumerate(groups.values()):
            if name in d:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(d[name])
        ax.bar(xs, ys, width, label=name, color=COLORS.get(name))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups))
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def _ops_chart(results: dict[str, Any], path: str) -> bool:
    groups = [g for g in TITLES if g in results["groups"]]
    if not groups:
        return False
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        data = results["groups"][g]
        ops = {
            op: {n: e["median_ns"] / 1000 for n, e in data[op]["results"].items()}
            for op in ("get", "set", "incr", "list")
            if op in data
        }
        values = [v for d in ops.values() for v in d.values()]
        log = max(values) > 5 * min(values)
        _bars(ax, ops, "µs per operation" + (" (log)" if log else ""), log=log)
        ax.set_title(TITLES[g])
        ax.legend(fontsize=7)
    fig.suptitle("Median time per operation, interleaved rounds (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _http_chart(results: dict[str, Any], path: str) -> bool:
    http = results["groups"].get("http")
    if not http:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    routes = {
        route: {name: e[name]["rps"] for name in ("flask-ploy", "hand-written")}
        for route, e in http["routes"].items()
    }
    _bars(ax, routes, "requests per second")
    for j, (route, e) in enumerate(http["routes"].items()):
        top = max(routes[route].values())
        ax.annotate(f"flask-ploy: {e['paired_ratio']:.2f}x", (j, top), ha="center", va="bottom",
                    fontsize=9)  # fmt: skip
    ax.set_title(f"gunicorn, {http['workers']} workers, wrk (higher is better)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _growth_chart(results: dict[str, Any], path: str) -> bool:
    groups = results["groups"]
    growth, dl, cache = groups.get("growth"), groups.get("dumpload"), groups.get("cache")
    if not (growth or dl or (cache and "get_many" in cache)):
        return False
    sizes = results["settings"]["sizes"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    ax = axes[0][0]
    if growth:
        lines = [("get", "flask-ploy", "-o", "#2b6cb0"), ("get", "sqlite3", "-o", "#555555"),
                 ("get", "flask-ploy + mmap", ":o", "#805ad5"),
                 ("get", "flask-ploy hot range", "-.o", "#38a169"),
                 ("list", "flask-ploy", "--s", "#2b6cb0"),
                 ("list", "sqlite3", "--s", "#555555")]  # fmt: skip
        for op, who, style, color in lines:
            r = growth[op]["results"]
            if f"{who} @{sizes[0]}" not in r:
                continue
            ys = [r[f"{who} @{s}"]["median_ns"] / 1000 for s in sizes]
            label = f"{who} {op}" + (" (page of 100)" if op == "list" else "")
            ax.plot(sizes, ys, style, label=label, color=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("keys in the table")
        ax.set_ylabel("µs per call (log)")
        ax.set_title("State get and list vs dataset size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        ax.set_visible(False)
    if dl:
        ax = axes[0][1]
        for op, style in (("load", "-o"), ("dump", "--s")):
            ys = [dl[op][str(s)]["keys_per_s"] for s in sizes if str(s) in dl[op]]
            ax.plot(sizes[: len(ys)], ys, style, label=f"{op} ({dl[op][str(sizes[0])]['via']})")
        ax.set_xscale("log")
        ax.set_xlabel("keys")
        ax.set_ylabel("keys per second")
        ax.set_title("Dump / load throughput")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax = axes[1][0]
        for op, style in (("load", "-o"), ("dump", "--s")):
            ys = [dl[op][str(s)]["peak_rss_mb"] for s in sizes if str(s) in dl[op]]
            ax.plot(sizes[: len(ys)], ys, style, label=f"{op}: peak RSS")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("keys")
        ax.set_ylabel("MB")
        ax.set_title("Dump / load peak memory (whole process)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        axes[0][1].set_visible(False)
        axes[1][0].set_visible(False)
    ax = axes[1][1]
    if cache and "get_many" in cache:
        many = cache["get_many"]
        xs = [int(n) for n in many]
        names = list(next(iter(many.values()))["results"])
        for name in names:
            ys = [many[str(n)]["results"][name]["median_ns"] / 1000 for n in xs]
            ax.plot(xs, ys, "-o", label=name, color=COLORS.get(name))
        ax.set_xscale("log")
        ax.set_xlabel("keys per call")
        ax.set_ylabel("µs per call")
        ax.set_title("Cache get_many vs batch size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _profile_chart(results: dict[str, Any], path: str) -> bool:
    profile = results["groups"].get("profile")
    if not profile:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, section, title in ((axes[0], "state", "State.get, SQLite"),
                               (axes[1], "cache", "Cache.get, Redis")):  # fmt: skip
        r = profile[section]["results"]
        names = list(r)
        ys = [r[n]["median_ns"] / 1000 for n in names]
        colors = ["#555555", "#999999", "#2b6cb0", "#63b3ed", "#90cdf4"]
        ax.barh(names, ys, color=colors[: len(names)])
        for y, v in enumerate(ys):
            ax.annotate(f"{v:.2f}", (v, y), va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("µs per call (median)")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def draw(results: dict[str, Any], charts_dir: str) -> list[str]:
    """Draw every chart the results allow; return the paths written."""
    out = []
    for name, fn in (("ops", _ops_chart), ("http", _http_chart),
                     ("growth", _growth_chart), ("profile", _profile_chart)):  # fmt: skip
        path = os.path.join(charts_dir, f"{name}.png")
        if fn(results, path):
            out.append(path)
    return out
