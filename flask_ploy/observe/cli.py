"""``flask ploy stats``: what the shared backends can tell, and this process's counters.

The command runs in a process of its own, so the app's per-process counters
(:meth:`FlaskPloy.stats <flask_ploy.FlaskPloy.stats>`) are not there: it
asks the backends the processes share instead. Redis: the server's
``INFO stats`` ``keyspace_hits``/``keyspace_misses`` (every client of that
server, not only this app). SQLite cache: the entries per resource. State:
the live keys per resource. ``memory://``: nothing (each process has its own).
"""

from __future__ import annotations

import json
from typing import Any

import click
from flask import g
from flask.cli import with_appcontext

from ..cli.common import current_bindings, extension, reporting
from ..errors import PloyError
from .proxy import unwrap


def _redis_info(backend: Any) -> dict[str, int] | None:
    """``keyspace_hits``/``keyspace_misses`` of a Redis backend's server(s)."""
    client = getattr(backend, "client", None)
    if client is None or not hasattr(client, "info"):
        return None
    info = client.info("stats")
    nodes = [info] if "keyspace_hits" in info else [v for v in info.values() if isinstance(v, dict)]
    return {
        "keyspace_hits": sum(int(n.get("keyspace_hits", 0)) for n in nodes),
        "keyspace_misses": sum(int(n.get("keyspace_misses", 0)) for n in nodes),
    }


def collect() -> dict[str, Any]:
    """Everything ``flask ploy stats`` shows, as plain data (needs an app context).

    A backend that fails is reported with ``"error"``, not raised.
    """
    bindings = current_bindings()
    out: dict[str, Any] = {"cache": [], "state": [], "process": extension().stats()}
    for backend in bindings.cache_backends():
        names = [n for n, c in bindings.caches.items() if c.backend is backend]
        scheme = type(backend).schemes[0] if type(backend).schemes else "redis"
        entry: dict[str, Any] = {"url": backend.display_url, "bindings": names}
        try:
            if scheme == "memory":
                entry["note"] = "a cache of each process's own: nothing shared to count"
            elif scheme == "sqlite":
                entry["entries"] = {
                    bindings.caches[n].resource: unwrap(getattr(g.env, n)).count() for n in names
                }
            else:
                entry["server"] = _redis_info(backend)
        except Exception as exc:  # a backend down: say so, go on
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out["cache"].append(entry)
    seen: set[tuple[int, str]] = set()
    for name, (store, resource) in bindings.states.items():
        if (id(store), resource) in seen:
            continue
        seen.add((id(store), resource))
        row: dict[str, Any] = {"url": store.display_url, "resource": resource, "binding": name}
        try:
            row["keys"] = unwrap(getattr(g.env, name)).count()
        except PloyError as exc:
            row["error"] = str(exc)
        out["state"].append(row)
    return out


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@with_appcontext
def stats_command(as_json: bool) -> None:
    """Counters of the shared backends (Redis hits/misses, entries, keys).

    Redis: the server's keyspace hits and misses (every client of it).
    SQLite cache: entries per resource. State: live (unexpired) keys per resource. The
    app's per-operation counters live in each app process: serve /metrics
    (PLOY_METRICS) or call ploy.stats() there.
    """
    with reporting():
        data = collect()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for entry in data["cache"]:
        click.echo(f"cache {entry['url']} ({', '.join(entry['bindings'])})")
        if "error" in entry:
            click.echo(f"  unavailable: {entry['error']}")
        elif "note" in entry:
            click.echo(f"  {entry['note']}")
        elif "entries" in entry:
            for resource, n in entry["entries"].items():
                click.echo(f"  resource {resource}: {n} entries")
        elif entry.get("server"):
            s = entry["server"]
            total = s["keyspace_hits"] + s["keyspace_misses"]
            rate = f" ({s['keyspace_hits'] / total:.1%} hits)" if total else ""
            click.echo(
                f"  server keyspace_hits {s['keyspace_hits']}, keyspace_misses"
                f" {s['keyspace_misses']}{rate} (every client of this server)"
            )
    for row in data["state"]:
        shown = row["error"] if "error" in row else f"{row['keys']} keys"
        click.echo(f"state {row['url']} resource {row['resource']}: {shown}")
    process = data["process"]
    if not process["bindings"]:
        click.echo(
            "this process: no operation counters (PLOY_METRICS is off, or nothing ran"
            " here: the app's counters are in its own processes, at /metrics)"
        )
    for name, entry in process["bindings"].items():
        for op, c in entry["ops"].items():
            click.echo(f"this process {name}.{op}: {c['calls']} calls, {c['outcomes']}")
