"""``flask ploy config``, ``check`` and ``types``: the app's bindings as a whole."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

import click
from flask import current_app

from .. import config as _config
from .. import typegen
from .common import current_bindings, echo_table, extension, ploy_cli, reporting


def _echo_settings_warnings(config: Any) -> None:
    """List the settings and variables that have no effect, after a report."""
    warnings = _config.settings_warnings(config, os.environ)
    if warnings:
        click.echo("\nSettings with no effect:")
        for warning in warnings:
            click.echo(f"- {warning}")


@ploy_cli.command("config")
def config_command() -> None:
    """Show the bindings and their backends, passwords masked.

    Reads ploy.yaml (or PLOY_BINDINGS) and the PLOY_* settings again, so
    an edit made since the app started is checked too. Exits 1 with the
    error if the configuration is invalid. Opens no connection. Lists any
    PLOY_* setting or environment variable that has no effect.
    """
    ext = extension()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with reporting():
        fresh = ext.build(app)
    try:
        bindings = fresh.bindings
        rows: list[tuple[str, ...]] = []
        for b in bindings.bindings:
            if b.kind == "cache":
                url = fresh.caches[b.name].backend.display_url
            else:
                url = fresh.states[b.name][0].display_url
            rows.append((b.name, b.kind, b.resource, url, bindings.source))
    finally:
        fresh.close()
    echo_table(("Binding", "Kind", "Resource", "Backend", "Source"), rows)
    _echo_settings_warnings(app.config)


@ploy_cli.command("check")
def check_command() -> None:
    """Ping every backend; exit 1 if one is down.

    Shows the latency of each backend, and the error of each one down;
    then the cache bindings on memory:// (a cache per process, which
    gunicorn workers and this CLI do not share) and any PLOY_* setting or
    environment variable that has no effect (warnings: the exit code is for
    the backends only).

    The latency is the median of three round trips (PING or SELECT 1) after
    the first, which also opens the connection.
    """
    app_bindings = current_bindings()
    targets = app_bindings.backends()
    rows: list[tuple[str, ...]] = []
    down = 0
    for target in targets:
        try:
            start = time.perf_counter()
            target.ping()
            connect = time.perf_counter() - start
            trips = []
            for _ in range(3):
                start = time.perf_counter()
                target.ping()
                trips.append(time.perf_counter() - start)
        except Exception as exc:
            down += 1
            reason = str(exc).strip().splitlines()
            status, detail = "DOWN", f"{type(exc).__name__}: {reason[0] if reason else ''}"
        else:
            median = statistics.median(trips) * 1000
            status, detail = "ok", f"{median:.2f} ms (connect {connect * 1000:.1f} ms)"
        rows.append((target.kind, target.display_url, ", ".join(target.bindings), status, detail))
    echo_table(("Kind", "Backend", "Bindings", "Status", "Latency or error"), rows)
    from ..extension import per_process_warnings

    per_process = per_process_warnings(app_bindings)
    if per_process:
        click.echo("\nPer-process caches:")
        for warning in per_process:
            click.echo(f"- {warning}")
    _echo_settings_warnings(current_app.config)
    if down:
        raise click.ClickException(f"{down} of {len(targets)} backends are down")


@ploy_cli.command("types")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the module (- for stdout). Default: ploy_env.py beside"
    " ploy.yaml, or in the app's root folder for inline PLOY_BINDINGS.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if the module is missing or out of date (for CI).",
)
def types_command(output: str | None, check: bool) -> None:
    """Write ploy_env.py: the bindings, typed for mypy.

    The module defines ``PloyEnv``, with one read-only attribute per
    binding typed CacheBinding or StateBinding, and ``env()``, which returns
    ``g.env`` typed as ``PloyEnv``. The output depends only on ploy.yaml:
    run it again after changing the bindings.
    """
    extension()
    app = current_app
    with reporting():
        bindings = _config.load_bindings(app.config, app.root_path)
    inline = app.config.get("PLOY_BINDINGS") is not None
    if output is None:
        folder = app.root_path if inline else os.path.dirname(bindings.source)
        output = os.path.join(folder, "ploy_env.py")
    source = bindings.source
    if not inline:
        base = os.getcwd() if output == "-" else os.path.dirname(os.path.abspath(output))
        with contextlib.suppress(ValueError):  # another drive on Windows
            source = Path(os.path.relpath(bindings.source, base)).as_posix()
    text = typegen.generate(bindings, source)
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, encoding="utf-8") as f:
            current: str | None = f.read()
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {output}: {exc}") from None
    if check:
        if current != text:
            state = "is missing" if current is None else "is out of date"
            raise click.ClickException(f"{output} {state}; run 'flask ploy types' to update it")
        click.echo(f"{output} is up to date.")
        return
    if current == text:
        click.echo(f"{output} is up to date.")
        return
    try:
        with open(output, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    click.echo(f"Wrote {output} ({len(bindings.bindings)} bindings from {source}).")
