"""``flask ploy config``, ``check`` and ``types``: the app's bindings as a whole."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import current_app

from .. import config as _config
from .. import typegen
from .common import (
    current_bindings,
    echo_table,
    extension,
    is_regular_or_missing,
    output_file,
    ploy_cli,
    reporting,
)

if TYPE_CHECKING:
    from ..app_bindings import AppBindings


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
    current = ext.app_bindings()
    # Temporary bindings (FlaskPloy.isolated, the pytest plugin) differ on purpose.
    running = {} if current.temporary else _backend_urls(current)
    try:
        bindings = fresh.bindings
        rows: list[tuple[str, ...]] = []
        for name, url in _backend_urls(fresh).items():
            b = bindings.get(name)
            assert b is not None
            rows.append((name, b.kind, b.resource, url, bindings.source))
        stale = [
            f"{name}: the app uses {running.get(name, '(no such binding)')}"
            for name, url in _backend_urls(fresh).items()
            if running and running.get(name) != url
        ] + [f"{name}: the app has it, the configuration no longer" for name in running
             if bindings.get(name) is None]  # fmt: skip
    finally:
        fresh.close()
    echo_table(("Binding", "Kind", "Resource", "Backend", "Source"), rows)
    if stale:
        click.echo(
            "\nThe app runs with other bindings than these (PLOY_* set after"
            " init_app, or ploy.yaml edited since it started: restart it, or set them"
            " before FlaskPloy(app)):"
        )
        for line in stale:
            click.echo(f"- {line}")
    _echo_settings_warnings(app.config)


def _backend_urls(app_bindings: AppBindings) -> dict[str, str]:
    """Each binding's backend URL, passwords masked, in the bindings' order."""
    urls = {}
    for b in app_bindings.bindings.bindings:
        if b.kind == "cache":
            urls[b.name] = app_bindings.caches[b.name].backend.display_url
        else:
            urls[b.name] = app_bindings.states[b.name][0].display_url
    return urls


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
    regular = is_regular_or_missing(output)
    if not regular and check:
        raise click.ClickException(f"cannot check {output}: not a regular file")
    try:
        if not regular:  # a FIFO or a device: write it, reading would block or consume
            current: str | None = None
        else:
            with open(output, encoding="utf-8") as f:
                current = f.read()
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
        with output_file(output) as f:
            f.write(text.encode("utf-8"))
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    click.echo(f"Wrote {output} ({len(bindings.bindings)} bindings from {source}).")
