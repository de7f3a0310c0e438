"""Turn the raw results into Markdown, reST fragments and PNG charts.

``results.json`` keeps everything measured. ``results.md`` has the tables in
Markdown; the ``*.rst`` fragments have the same tables for
docs/performance.rst (``.. include::``); the charts are PNGs for
``.. image::``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

PLOY = "flask-ploy (binding)"
SQLITE_APP = "flask-ploy, SQLite cache"  # bench.http_bench.SQLITE_APP
ENV = "flask-ploy (g.env)"
GROUP_TITLES = {
    "cache": "Cache on Redis",
    "state_sqlite": "State on SQLite",
    "state_postgres": "State on PostgreSQL",
}
RAW = {"cache": "redis-py", "state_sqlite": "sqlite3", "state_postgres": "psycopg"}

Table = tuple[list[str], list[list[str]]]


def server_versions(redis_url: str, pg_url: str, have: dict[str, bool]) -> dict[str, str]:
    """The Redis and PostgreSQL server versions, where reachable."""
    out: dict[str, str] = {}
    if have.get("redis"):
        try:
            import redis

            out["redis-server"] = str(redis.Redis.from_url(redis_url).info()["redis_version"])
        except Exception:  # noqa: S110 - a version is nice to have
            pass
    if have.get("postgres"):
        try:
            import psycopg

            with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                out["postgresql"] = str(row[0]).split()[0] if row else "?"
        except Exception:  # noqa: S110
            pass
    return out


# ---------------------------------------------------------------------------
# Numbers to text


def us(ns: float) -> str:
    """Nanoseconds as microseconds, 3 significant digits."""
    v = ns / 1000
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _cell(entry: dict[str, Any] | None, show_ratio: bool = True) -> str:
    if entry is None:
        return "n/a"
    text = us(entry["median_ns"])
    if show_ratio and "paired_ratio" in entry:
        text += f" ({ratio(entry['paired_ratio'])})"
    return text


def _contenders(ops: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for op in ops.values():
        for name in op["results"]:
            if name not in names:
                names.append(name)
    return names


def ops_table(group: dict[str, Any]) -> Table:
    ops = {k: v for k, v in group.items() if k in ("get", "set", "incr", "list")}
    header = ["contender", *(f"{op} µs (x raw)" for op in ops)]
    rows = []
    for name in _contenders(ops):
        rows.append([name, *(_cell(op["results"].get(name)) for op in ops.values())])
    return header, rows


def many_table(group: dict[str, Any]) -> Table:
    many = group["get_many"]
    header = ["contender", *(f"{n} key{'s' if n != '1' else ''} µs (x raw)" for n in many)]
    rows = []
    for name in _contenders(many):
        rows.append([name, *(_cell(m["results"].get(name)) for m in many.values())])
    return header, rows


def get_or_set_table(cache: dict[str, Any]) -> Table:
    """get_or_set's hits against get's, on Redis and on the SQLite cache."""
    rows = []
    for where, m in (("Redis", cache.get("get_or_set")),
                     ("SQLite", _get(cache, "embedded", "get_or_set"))):  # fmt: skip
        if not m:
            continue
        for name, entry in m["results"].items():
            rows.append([f"{where}: {name[11:]}", _cell(entry)])
    return ["contender", "µs per hit (x get)"], rows


def http_table(http: dict[str, Any]) -> Table:
    inproc = http.get("in_process", {})
    header = ["route", "flask-ploy req/s", "hand-written req/s", "ratio",
              "flask-ploy p50 ms", "hand-written p50 ms"]  # fmt: skip
    lite = any(SQLITE_APP in e for e in http["routes"].values())
    if lite:
        header += ["flask-ploy, SQLite cache req/s (x Redis)"]
    if inproc:
        header += ["in process: flask-ploy µs", "hand-written µs", "ratio"]
    rows = []
    for route, e in http["routes"].items():
        row = [
            f"{route} ({e['path']})",
            f"{e['flask-ploy']['rps']:,.0f}",
            f"{e['hand-written']['rps']:,.0f}",
            ratio(e["paired_ratio"]),
            f"{e['flask-ploy']['p50_ms']:.2f}",
            f"{e['hand-written']['p50_ms']:.2f}",
        ]
        if lite:
            row += [f"{e[SQLITE_APP]['rps']:,.0f} ({ratio(e['sqlite_vs_redis'])})"
                    if SQLITE_APP in e else ""]  # fmt: skip
        if inproc:
            r = inproc[route]["results"]
            row += [us(r["flask-ploy"]["median_ns"]), us(r["hand-written"]["median_ns"]),
                    ratio(1 / r["flask-ploy"]["paired_ratio"])]  # fmt: skip
        rows.append(row)
    return header, rows


def growth_table(results: dict[str, Any]) -> Table:
    growth = results["groups"]["growth"]
    sizes = [str(s) for s in results["settings"]["sizes"]]
    g, li = growth["get"]["results"], growth["list"]["results"]

    def cell(r: dict[str, Any], name: str, size: str) -> str:
        e, base = r.get(f"{name} @{size}"), r.get(f"{name} @{sizes[0]}")
        if e is None or base is None:
            return "n/a"
        return f"{us(e['median_ns'])} ({ratio(e['median_ns'] / base['median_ns'])})"

    header = ["keys", "get µs", "sqlite3 get µs", "get + mmap µs", "get, hot range µs",
              "list page µs", "sqlite3 list page µs"]  # fmt: skip
    rows = []
    for size in sizes:
        rows.append([
            f"{int(size):,}",
            cell(g, "flask-ploy", size),
            cell(g, "sqlite3", size),
            cell(g, "flask-ploy + mmap", size),
            cell(g, "flask-ploy hot range", size),
            cell(li, "flask-ploy", size),
            cell(li, "sqlite3", size),
        ])  # fmt: skip
    return header, rows


def dumpload_table(results: dict[str, Any]) -> Table:
    dl = results["groups"]["dumpload"]
    header = ["keys", "load keys/s", "load s", "load peak RSS MB", "dump keys/s", "dump s",
              "dump peak RSS MB"]  # fmt: skip
    rows = []
    for size in (str(s) for s in results["settings"]["sizes"]):
        lo, du = dl["load"].get(size), dl["dump"].get(size)
        if not (lo and du):
            continue
        rows.append([
            f"{int(size):,}",
            f"{lo['keys_per_s']:,.0f}", f"{lo['seconds']:.2f}", f"{lo['peak_rss_mb']:.0f}",
            f"{du['keys_per_s']:,.0f}", f"{du['seconds']:.2f}", f"{du['peak_rss_mb']:.0f}",
        ])  # fmt: skip
    return header, rows


def cli_table(results: dict[str, Any]) -> Table:
    cli = results["groups"]["dumpload"]["cli"]
    header = ["command (bench/cli_dump_load.py)", "seconds", "keys/s", "peak RSS MB"]
    rows = [[r["command"], f"{r['seconds']:.1f}", r["keys_per_s"], f"{r['peak_rss_mb']:.0f}"]
            for r in cli["rows"]]  # fmt: skip
    return header, rows


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def profile_tables(profile: dict[str, Any]) -> dict[str, Table]:
    """The hot path taken apart: where the nanoseconds above the driver go."""

    def med(section: str, name: str) -> float:
        return float(profile[section]["results"][name]["median_ns"])

    loop = med("micro", "empty loop")

    def micro(name: str) -> float:
        return med("micro", name) - loop

    def ns(v: float) -> str:
        return f"{v:,.0f}"

    tables: dict[str, Table] = {}
    s_drv = med("state", "driver call (flask-ploy's cursor)")
    s_bind = med("state", "binding.get(k)")
    s_env = med("state", "g.env.STATE.get(k)")
    s_raw = med("state", "sqlite3 conn.execute")
    s_cv = med("state", "same, without the g proxy")
    check = micro("argument check")
    ctx = med("context", "app context push+pop")
    ctx1 = med("context", "context + 1 g.env.STATE.get")
    ctx2 = med("context", "context + 2 g.env.STATE.get")
    rows = [
        ["driver call: cursor.execute + fetchone (flask-ploy's held cursor)", ns(s_drv), ""],
        ["raw sqlite3: conn.execute(...).fetchone() (a new cursor per call)", ns(s_raw),
         f"{s_raw - s_drv:+,.0f} vs driver call"],
        ["binding.get(k)", ns(s_bind), f"{s_bind - s_drv:+,.0f} above the driver call"],
        ["  of which argument check (timed alone)", ns(check), ""],
        ["  of which the call, slot reads and the row unpacking (the rest)",
         ns(s_bind - s_drv - check), ""],
        ["g.env.STATE.get(k)", ns(s_env), f"{s_env - s_bind:+,.0f} above binding.get"],
        ["  same, through _cv_app.get().g.env (no g proxy)", ns(s_cv),
         f"{s_cv - s_bind:+,.0f} above binding.get"],
        ["  g.env (timed alone)", ns(micro("g.env")), ""],
        ["  g.env.STATE (timed alone)", ns(micro("g.env.STATE")), ""],
        ["per app context: push + pop, Env", ns(ctx), ""],
        ["per app context: first State op (borrow + return the connection)",
         ns(ctx1 - ctx - s_env), "context + 1 get, minus context, minus a get"],
        ["per app context: a second State op", ns(ctx2 - ctx1), ""],
        ["StateStore.checkout + checkin (pool borrow, timed alone)",
         ns(med("context", "StateStore checkout+checkin")), ""],
        ["sqlite3.connect + PRAGMA + close (connect per request)",
         ns(med("context", "sqlite3.connect+PRAGMA+close")), ""],
    ]  # fmt: skip
    tables["state"] = (["State.get on SQLite", "ns", "note"], rows)
    c_drv = med("cache", "driver call (flask-ploy's client)")
    c_bind = med("cache", "binding.get(k)")
    c_env = med("cache", "g.env.CACHE.get(k)")
    c_raw = med("cache", "redis-py, own client")
    c_cv = med("cache", "same, without the g proxy")
    rows = [
        ["driver call: client.get(full_key) (flask-ploy's client)", ns(c_drv), ""],
        ["raw redis-py: its own client and default pool", ns(c_raw),
         f"{c_raw - c_drv:+,.0f} vs driver call"],
        ["binding.get(k)", ns(c_bind), f"{c_bind - c_drv:+,.0f} above the driver call"],
        ["  of which argument check (timed alone)", ns(check), ""],
        ["  of which key prefixing (timed alone)", ns(micro("key prefixing")), ""],
        ["g.env.CACHE.get(k)", ns(c_env), f"{c_env - c_bind:+,.0f} above binding.get"],
        ["  same, through _cv_app.get().g.env (no g proxy)", ns(c_cv),
         f"{c_cv - c_bind:+,.0f} above binding.get"],
        ["  g.env.CACHE (timed alone)", ns(micro("g.env.CACHE")), ""],
        ["redis-py pool borrow + return, BlockingConnectionPool (flask-ploy)",
         ns(micro("redis pool borrow+return (flask-ploy, blocking)")), "inside every command"],
        ["redis-py pool borrow + return, ConnectionPool (redis-py default)",
         ns(micro("redis pool borrow+return (redis-py default)")), "inside every command"],
    ]  # fmt: skip
    tables["cache"] = (["Cache.get on Redis", "ns", "note"], rows)
    return tables


def targets(results: dict[str, Any]) -> Table:
    """Each target of the spec, as measured."""
    groups = results["groups"]
    rows: list[list[str]] = []

    def pr(group: str, op: str, name: str) -> float | None:
        return _get(groups, group, op, "results", name, "paired_ratio")  # type: ignore[no-any-return]

    def med(group: str, op: str, name: str) -> float | None:
        return _get(groups, group, op, "results", name, "median_ns")  # type: ignore[no-any-return]

    def add(what: str, value: float | None, ok: Callable[[float], bool], shown: str) -> None:
        if value is None:
            return
        rows.append([what, shown, "met" if ok(value) else "missed"])

    for op in ("get", "set"):
        for name in (PLOY, ENV):
            v = pr("cache", op, name)
            add(f"cache {op} <= 1.05x redis-py, {name[12:-1]}", v, lambda x: x <= 1.05,
                ratio(v))  # fmt: skip
    for name in ("flask-ploy sqlite: (binding)", "flask-ploy sqlite: (g.env)"):
        v = _get(groups, "cache", "embedded", "get", "results", name, "paired_ratio")
        add(f"cache get on SQLite <= 2x sqlite3, {name[20:-1]}", v, lambda x: x <= 2, ratio(v))
    for where, path in (("Redis", ("cache", "get_or_set")),
                        ("SQLite", ("cache", "embedded", "get_or_set"))):  # fmt: skip
        v = _get(groups, *path, "results", "flask-ploy get_or_set (binding)", "paired_ratio")
        add(f"get_or_set hit <= 1.05x get, {where}", v, lambda x: x <= 1.05, ratio(v))
    stampede = groups.get("stampede")
    if stampede:
        ploy = stampede["cold"]["ploy"]["computations"]
        add("stampede: 64 requests at once, one computation", max(ploy), lambda x: x == 1,
            ", ".join(map(str, ploy)))  # fmt: skip
        hot = stampede["hot"]["ploy"]
        add("stampede: no wait on a lock after the first second", hot["waited_after_1s"],
            lambda x: x == 0, f"{hot['waited_after_1s']} waited")  # fmt: skip
        add("stampede: about one computation per expiry", hot["per_expiry"],
            lambda x: x <= 1.5, f"{hot['per_expiry']:.2f} per expiry")  # fmt: skip
    for group in ("state_sqlite", "state_postgres"):
        raw = RAW[group]
        for op in ("get", "set"):
            for name in (PLOY, ENV):
                v = pr(group, op, name)
                add(f"state {op} <= 1.3x {raw}, {name[12:-1]}", v, lambda x: x <= 1.3, ratio(v))
    for op in ("get", "set", "incr"):
        p, d = med("state_sqlite", op, PLOY), med("state_sqlite", op, "diskcache")
        if p and d:
            add(f"state {op} faster than diskcache", d / p, lambda x: x > 1,
                f"diskcache/flask-ploy = {d / p:.2f}")  # fmt: skip
    for group in ("state_sqlite", "state_postgres"):
        for op in ("get", "set", "incr", "list"):
            p, o = med(group, op, PLOY), med(group, op, "Flask-SQLAlchemy ORM")
            if p and o:
                db = "SQLite" if group == "state_sqlite" else "PostgreSQL"
                add(f"state {op} >= 5x faster than the ORM, {db}", o / p, lambda x: x >= 5,
                    f"{o / p:.1f}x")  # fmt: skip
    http = groups.get("http")
    if http:
        for route, e in http["routes"].items():
            v = e["paired_ratio"]
            add(f"HTTP {route} >= 0.95x hand-written", v, lambda x: x >= 0.95, ratio(v))
        for route, e in http["routes"].items():
            v = e.get("sqlite_vs_redis")
            add(f"HTTP {route}, SQLite cache >= Redis", v, lambda x: x >= 1, ratio(v))
    growth = groups.get("growth")
    if growth:
        sizes = results["settings"]["sizes"]
        for name, how in (("flask-ploy", "uniformly random keys"),
                          ("flask-ploy hot range", "a hot range of 1,000 keys"),
                          ("flask-ploy + mmap", "random keys, mmap_size set")):  # fmt: skip
            lo = _get(growth, "get", "results", f"{name} @{sizes[0]}", "median_ns")
            hi = _get(growth, "get", "results", f"{name} @{sizes[-1]}", "median_ns")
            if lo and hi:
                add(f"state get @{sizes[-1]:,} keys <= 1.3x @{sizes[0]:,}, {how}", hi / lo,
                    lambda x: x <= 1.3, ratio(hi / lo))  # fmt: skip
    return ["target", "measured", ""], rows


OPS = ("get", "set", "incr", "list")
OTHERS = ("Flask-Caching", "diskcache", "Flask-SQLAlchemy ORM")


def overhead_table(results: dict[str, Any]) -> Table:
    """For the docs: flask-ploy's time per operation as a multiple of the raw driver's."""
    groups = results["groups"]
    rows = []
    for g, title in GROUP_TITLES.items():
        for op in OPS:
            r = _get(groups, g, op, "results")
            if not r or PLOY not in r:
                continue
            rows.append([f"{title}: {op}", RAW[g],
                         ratio(r[PLOY].get("paired_ratio")),
                         ratio(_get(r, ENV, "paired_ratio"))])  # fmt: skip
    header = ["operation", "raw driver (1.00x)", "flask-ploy, binding in a local",
              "flask-ploy, g.env.NAME"]  # fmt: skip
    return header, rows


def _faster(other: float | None, ploy: float | None) -> str:
    if not other or not ploy:
        return ""
    x = other / ploy
    word = "faster" if x >= 1 else "slower"
    x = max(x, 1 / x)
    return f"{x:.2f}x {word}" if x < 2 else f"{x:.1f}x {word}"


def speedup_table(results: dict[str, Any]) -> Table:
    """For the docs: flask-ploy (binding) against the libraries it replaces."""
    groups = results["groups"]
    rows = []
    for g, title in GROUP_TITLES.items():
        for op in OPS:
            r = _get(groups, g, op, "results")
            if not r or PLOY not in r or not any(o in r for o in OTHERS):
                continue
            ploy = r[PLOY]["median_ns"]
            rows.append([f"{title}: {op}",
                         *(_faster(_get(r, o, "median_ns"), ploy) for o in OTHERS)])  # fmt: skip
    return ["operation", *(f"than {o}" for o in OTHERS)], rows


# ---------------------------------------------------------------------------
# Markdown and reST


def md_table(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rst_table(table: Table, widths: str = "") -> str:
    header, rows = table
    out = [".. list-table::", "   :header-rows: 1"]
    if widths:
        out.append(f"   :widths: {widths}")
    out.append("")
    for row in [header, *rows]:
        first = True
        for cell in row:
            text = cell.replace("*", "\\*").replace("|", "\\|") or " "
            if cell.startswith("  "):
                text = "\u2003" + text.strip()  # an em space shows the nesting
            out.append(f"   {'* -' if first else '  -'} {text}")
            first = False
    return "\n".join(out) + "\n"


RMW_TITLES = {**GROUP_TITLES, "state_mariadb": "State on MariaDB"}


def rmw_table(results: dict[str, Any]) -> Table:
    """Read-modify-write of a counter four ways, per database: alone, then contended."""
    groups = results["groups"]
    rows = []
    threads = None
    for g, title in RMW_TITLES.items():
        rmw = _get(groups, g, "read_modify_write")
        if not rmw:
            continue
        contended = rmw["contended"]
        threads = contended["threads"]
        for name, entry in rmw["alone"]["results"].items():
            c = contended["results"].get(name, {})
            rows.append([f"{title}: {name}", _cell(entry),
                         f"{c.get('ops_per_s', 0):,}", f"{c.get('retries_per_op', 0):.2f}",
                         f"{c.get('lost', 0):,}"])  # fmt: skip
    header = ["way", "alone: µs per op (x incr)",
              f"{threads} threads, one key: ops/s", "retries per op", "updates lost"]  # fmt: skip
    return header, rows


def _sections(results: dict[str, Any]) -> list[tuple[str, str, Table]]:
    """(fragment name, title, table) for everything measured."""
    groups = results["groups"]
    out: list[tuple[str, str, Table]] = [
        ("overhead", "Time per operation, as a multiple of the raw driver's",
         overhead_table(results)),
        ("speedup", "flask-ploy against the libraries it replaces", speedup_table(results)),
        ("targets", "Targets", targets(results)),
    ]  # fmt: skip
    for g, title in GROUP_TITLES.items():
        if g in groups:
            out.append((f"ops_{g}", f"{title}: median µs per operation", ops_table(groups[g])))
    if any(_get(groups, g, "read_modify_write") for g in RMW_TITLES):
        out.append(("rmw", "Read-modify-write of a counter: incr, replace, transact, get + set",
                    rmw_table(results)))  # fmt: skip
    if "cache" in groups and "get_many" in groups["cache"]:
        out.append(("get_many", "Cache get_many: µs per call", many_table(groups["cache"])))
    if "cache" in groups and "embedded" in groups["cache"]:
        out.append(("ops_cache_embedded",
                    "Cache on SQLite (the default) beside memory:// and Redis: median µs"
                    " per operation (x raw sqlite3 on the same file)",
                    ops_table(groups["cache"]["embedded"])))  # fmt: skip
    if "cache" in groups and "get_or_set" in groups["cache"]:
        out.append(("get_or_set", "Cache.get_or_set on a hit, against get on the same keys",
                    get_or_set_table(groups["cache"])))  # fmt: skip
    if "stampede" in groups:
        from .stampede import table as stampede_table

        s = groups["stampede"]
        out.append(("stampede", f"One slow report ({s['compute_ms']} ms, ttl {s['ttl']} s) under"
                    f" load: gunicorn {s['workers']}, Redis", stampede_table(s)))  # fmt: skip
    if "http" in groups:
        out.append(("http", "HTTP: gunicorn, 2 workers, wrk", http_table(groups["http"])))
    if "growth" in groups:
        out.append(("growth", "Cost growth: State on SQLite, µs per call (x @smallest)",
                    growth_table(results)))  # fmt: skip
    if "dumpload" in groups:
        out.append(("dumpload", "Dump and load (State.items / State.load), one process each",
                    dumpload_table(results)))  # fmt: skip
        if groups["dumpload"].get("cli"):
            n = groups["dumpload"]["cli"]["keys"]
            out.append(("cli", f"flask ploy state dump/load at {n:,} keys", cli_table(results)))
    if "profile" in groups:
        for name, table in profile_tables(groups["profile"]).items():
            out.append((f"profile_{name}", f"Hot path: {table[0][0]}", table))
    return out


def environment(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    v = results["versions"]
    s = results["settings"]
    plan = s["plan"]
    return [
        f"Measured {results['date']} ({results['mode']} run, {results.get('seconds', '?')} s).",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared with other work), "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Per-op groups: {plan['rounds']} interleaved rounds of {plan['ops']} operations"
        f" (after {plan['warmup']} warm-up rounds) per contender, on {s['dataset']:,} keys;"
        " medians per operation, ratios are the median of per-round ratios to the raw driver.",
    ]


def markdown(results: dict[str, Any]) -> str:
    parts = ["# flask-ploy benchmark results", "", *environment(results), ""]
    if results.get("skipped"):
        parts.append(
            "Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items()) + "."
        )
        parts.append("")
    for _name, title, table in _sections(results):
        parts += [f"## {title}", "", md_table(table)]
    return "\n".join(parts)


def write(results: dict[str, Any], out_dir: str, charts_dir: str) -> list[str]:
    """Write results.json, results.md, the reST fragments and the charts."""
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(charts_dir, exist_ok=True)
    paths = []
    path = os.path.join(out_dir, "results.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    paths.append(path)
    path = os.path.join(out_dir, "results.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown(results))
    paths.append(path)
    path = os.path.join(out_dir, "environment.rst")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(environment(results)) + "\n")
    paths.append(path)
    for name, _title, table in _sections(results):
        path = os.path.join(out_dir, f"{name}.rst")
        with open(path, "w", encoding="utf-8") as f:
            f.write(rst_table(table))
        paths.append(path)
    try:
        from . import charts
    except ImportError as exc:  # the tables are still worth having
        print(f"no charts: {exc}; pip install 'flask-ploy[bench]'")
        return paths
    paths += charts.draw(results, charts_dir)
    return paths


def summary(results: dict[str, Any]) -> str:
    _header, rows = targets(results)
    width = max((len(r[0]) for r in rows), default=10)
    lines = ["", "Targets:"]
    lines += [f"  {r[0]:<{width}}  {r[1]:>28}  {r[2]}" for r in rows]
    return "\n".join(lines)
