"""The ``flask ploy`` commands.

``FlaskPloy.init_app`` adds the ``ploy`` group to the app's CLI:

- ``flask ploy config``: the resolved bindings, passwords masked.
- ``flask ploy check``: ping every backend, exit 1 if one is down.
- ``flask ploy state get|set|delete|list|dump|load``: a State binding.
- ``flask ploy cache get|set|delete|ttl|incr|count|clear``: a Cache binding
  (not on ``memory://``).
- ``flask ploy types``: write the typed ``PloyEnv`` module.

An unknown binding, or one of the other kind, is a usage error (exit code
2) that lists the valid bindings; a failing backend or bad input exits 1.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from flask import current_app, g
from flask.cli import AppGroup

from . import config as _config
from . import typegen
from ._dumpfile import PAGE, BadInput, DumpReader, write_dump
from .cache import Cache, MemoryBackend
from .errors import PloyError
from .state import LIST_MAX, State

if TYPE_CHECKING:
    from .app_bindings import AppBindings
    from .extension import FlaskPloy


ploy_cli = AppGroup("ploy", help="Inspect and manage the Ploy bindings of this app.")


# ---------------------------------------------------------------------------
# Helpers


def _ext() -> FlaskPloy:
    """The app's FlaskPloy, or a clear error if it has none."""
    ext: FlaskPloy | None = current_app.extensions.get("ploy")
    if ext is None:
        raise click.ClickException(
            f"The app {current_app.import_name!r} does not use flask-ploy: create"
            " FlaskPloy(app), or call ploy.init_app(app), in the app or its factory"
        )
    return ext


def _app_bindings() -> AppBindings:
    return _ext().app_bindings()


@contextlib.contextmanager
def _reporting() -> Iterator[None]:
    """Turn flask-ploy errors into a one-line ``Error: ...`` and exit code 1."""
    try:
        yield
    except PloyError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _bad_argument(hint: str) -> Iterator[None]:
    """Turn the bindings' argument checks into a usage error (exit code 2)."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from exc


def _check_binding(name: str, kind: str) -> None:
    """Raise a usage error unless *name* is a binding of *kind*."""
    bindings = _app_bindings().bindings
    found = bindings.get(name)
    if found is not None and found.kind == kind:
        return
    valid = [b.name for b in bindings.of_kind(kind)]
    if found is None:
        message = f"{name!r} is not a binding in {bindings.source}."
        close = difflib.get_close_matches(name.upper(), valid, n=1)
        if close:
            message += f" Did you mean {close[0]}?"
    else:
        message = f"{name!r} is a {found.kind} binding, not a {kind} binding."
    message += f" The {kind} bindings are: {', '.join(valid) or '(none)'}"
    raise click.BadParameter(message, param_hint="'BINDING'")


def _state(name: str) -> State:
    """``g.env.<name>``, which must be a State binding."""
    _check_binding(name, "state")
    state: State = getattr(g.env, name)
    return state


def _cache(name: str) -> Cache:
    """A Cache on the backend of binding *name* that raises when the backend fails.

    The CLI must not report a miss when the server is down, whatever
    ``PLOY_CACHE_ON_ERROR`` says. A ``memory://`` binding is refused: this
    command's process would read and write a cache of its own, gone when it
    exits.
    """
    _check_binding(name, "cache")
    bindings = _app_bindings()
    cache = bindings.caches[name]
    if isinstance(cache.backend, MemoryBackend):
        raise click.ClickException(
            f"{name} uses memory://, a cache in each process's own memory: this command"
            " would read and write a cache of its own, gone when it exits, never the"
            " app's. Leave PLOY_CACHE_URL unset for a SQLite file in the instance folder"
            " that the app's processes and this command share, or use redis://"
        )
    s = bindings.settings
    return Cache(
        cache.name,
        cache.resource,
        cache.backend,
        prefix=s.cache_key_prefix,
        max_key_bytes=s.max_key_bytes,
        max_value_bytes=s.max_value_bytes,
        on_error="raise",
        default_ttl=s.cache_default_ttl,
    )


@contextlib.contextmanager
def _progress(length: int | None, label: str, show_pos: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr if it is a terminal; yields its ``update``.

    Quiet (a no-op ``update``) when stderr is piped or redirected, or when
    the length is unknown.
    """
    err = sys.stderr
    if length is None or not err.isatty():
        yield lambda n: None
        return
    with click.progressbar(
        length=length, label=label, file=err, show_pos=show_pos, show_percent=True
    ) as bar:
        yield bar.update


def _keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


def _echo_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print *rows* in left-aligned columns under *header* (like ``flask routes``)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


# ---------------------------------------------------------------------------
# flask ploy config / check / types


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
    ext = _ext()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _reporting():
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
    _echo_table(("Binding", "Kind", "Resource", "Backend", "Source"), rows)
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
    app_bindings = _app_bindings()
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
    _echo_table(("Kind", "Backend", "Bindings", "Status", "Latency or error"), rows)
    from .extension import per_process_warnings

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
    _ext()
    app = current_app
    with _reporting():
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


# ---------------------------------------------------------------------------
# flask ploy state ...


@ploy_cli.group("state")
def state_group() -> None:
    """Read, write, dump and load a State binding."""


@state_group.command("get")
@click.argument("binding")
@click.argument("key")
def state_get(binding: str, key: str) -> None:
    """Print the value of KEY; exit 1 if it is not set."""
    state = _state(binding)
    with _reporting(), _bad_argument("'KEY'"):
        value = state.get(key)
    if value is None:
        raise click.ClickException(f"{binding} has no key {key!r}")
    click.echo(value)


@state_group.command("set")
@click.argument("binding")
@click.argument("key")
@click.argument("value")
def state_set(binding: str, key: str, value: str) -> None:
    """Store VALUE under KEY (committed on return)."""
    state = _state(binding)
    with _reporting(), _bad_argument("'KEY' or 'VALUE'"):
        state.set(key, value)


@state_group.command("delete")
@click.argument("binding")
@click.argument("key")
def state_delete(binding: str, key: str) -> None:
    """Delete KEY. Deleting a missing key is not an error."""
    state = _state(binding)
    with _reporting(), _bad_argument("'KEY'"):
        deleted = state.delete(key)
    click.echo(f"Deleted {key!r}." if deleted else f"{binding} had no key {key!r}.")


@state_group.command("list")
@click.argument("binding")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many keys.")
def state_list(binding: str, prefix: str, limit: int | None) -> None:
    """Print the keys, one per line, in ascending (bytewise) order."""
    state = _state(binding)
    left = limit
    cursor: str | None = None
    with _reporting():
        while left is None or left > 0:
            page = state.list(
                prefix, limit=LIST_MAX if left is None else min(left, LIST_MAX), cursor=cursor
            )
            for key in page.keys:
                click.echo(key)
            if left is not None:
                left -= len(page.keys)
            cursor = page.cursor
            if cursor is None:
                break


@state_group.command("dump")
@click.argument("binding")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="File to write (- for stdout). Written under a temporary name, then renamed.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "json"]),
    default="jsonl",
    show_default=True,
    help="JSON Lines, or one JSON array.",
)
def state_dump(binding: str, output: str, fmt: str) -> None:
    """Write every key and value, sorted by key, as JSON.

    Each record is {"key": ..., "value": ...}, in UTF-8. The keys are read a
    page at a time, so memory stays flat however many there are; pages are
    read one after another, not in one snapshot.
    """
    state = _state(binding)
    with _reporting():
        total = state.count() if sys.stderr.isatty() else None
        with _progress(total, f"Dumping {binding}", show_pos=True) as update:
            if output == "-":
                out = sys.stdout.buffer
                n = write_dump(state.items(page_size=PAGE), out, fmt, update)
                out.flush()
            else:
                n = _dump_to_file(state, output, fmt, update)
    if output != "-":
        click.echo(f"Dumped {_keys(n)} of {binding} to {output}.", err=True)


def _dump_to_file(state: State, path: str, fmt: str, update: Callable[[int], None]) -> int:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ploy-dump-", dir=folder)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            n = write_dump(state.items(page_size=PAGE), out, fmt, update)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return n


@state_group.command("load")
@click.argument("binding")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, exists=True))
@click.option(
    "--replace", is_flag=True, help="Delete every key of the resource first (same transaction)."
)
@click.option("--dry-run", is_flag=True, help="Read and check FILE; write nothing.")
def state_load(binding: str, file: str, replace: bool, dry_run: bool) -> None:
    """Load a dump (FILE, or - for stdin) in one transaction.

    Reads JSON Lines or a JSON array of {"key": ..., "value": ...} (the
    formats of dump), detected from the first character. Existing keys are
    overwritten; with --replace, the keys not in FILE are deleted too. A bad
    record, or any failure, writes nothing; the error names its line.
    """
    state = _state(binding)
    settings = _app_bindings().settings
    stdin = file == "-"
    name = "<stdin>" if stdin else file
    stream = sys.stdin.buffer if stdin else open(file, "rb")  # noqa: SIM115
    try:
        size: int | None = None  # the progress bar's length, for a regular file
        if not stdin:
            with contextlib.suppress(OSError):
                st = os.fstat(stream.fileno())
                size = st.st_size if stat.S_ISREG(st.st_mode) else None
        with _reporting(), _progress(size, f"Loading {binding}", show_pos=False) as update:
            reader = DumpReader(
                stream, name, settings.max_key_bytes, settings.max_value_bytes, update
            )
            try:
                if dry_run:
                    n = sum(1 for _ in reader)
                    existing = state.count() if replace else 0
                else:
                    n = state.load(reader, replace=replace)
            except BadInput as exc:
                raise click.ClickException(f"{exc}; nothing was written") from None
    finally:
        if not stdin:
            stream.close()
    fmt = {"json": "a JSON array", "jsonl": "JSON Lines", "empty": "an empty file"}[
        reader.format or "empty"
    ]
    if dry_run:
        also = f"; --replace would first delete its {_keys(existing)}" if replace else ""
        click.echo(f"Dry run: read {_keys(n)} from {name} ({fmt}), all valid for {binding}{also}.")
        click.echo("Nothing was written.")
    else:
        how = " after deleting its previous keys" if replace else ""
        click.echo(f"Loaded {_keys(n)} from {name} ({fmt}) into {binding}{how}.")


# ---------------------------------------------------------------------------
# flask ploy cache ...


@ploy_cli.group("cache")
def cache_group() -> None:
    """Read, write, count and clear a Cache binding.

    Not on memory://: a command has a process, and so a memory:// cache, of
    its own.
    """


@cache_group.command("get")
@click.argument("binding")
@click.argument("key")
def cache_get(binding: str, key: str) -> None:
    """Print the value of KEY; exit 1 if it is missing or expired."""
    cache = _cache(binding)
    with _reporting(), _bad_argument("'KEY'"):
        value = cache.get(key)
    if value is None:
        raise click.ClickException(f"{binding} has no key {key!r} (or it expired)")
    click.echo(value)


@cache_group.command("set")
@click.argument("binding")
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=int, default=None, help="Expire after this many seconds (>= 1).")
def cache_set(binding: str, key: str, value: str, ttl: int | None) -> None:
    """Store VALUE under KEY, for --ttl seconds or until evicted."""
    cache = _cache(binding)
    with _reporting(), _bad_argument("'KEY', 'VALUE' or '--ttl'"):
        cache.set(key, value, ttl=ttl)


@cache_group.command("delete")
@click.argument("binding")
@click.argument("key")
def cache_delete(binding: str, key: str) -> None:
    """Delete KEY. Deleting a missing key is not an error."""
    cache = _cache(binding)
    with _reporting(), _bad_argument("'KEY'"):
        deleted = cache.delete(key)
    click.echo(f"Deleted {key!r}." if deleted else f"{binding} had no key {key!r}.")


@cache_group.command("ttl")
@click.argument("binding")
@click.argument("key")
def cache_ttl(binding: str, key: str) -> None:
    """Print the seconds until KEY expires, or 'no expiry'; exit 1 if it is missing."""
    cache = _cache(binding)
    with _reporting(), _bad_argument("'KEY'"):
        left = cache.ttl(key)
    if left == 0:
        raise click.ClickException(f"{binding} has no key {key!r} (or it expired)")
    click.echo("no expiry" if left is None else str(left))


@cache_group.command("incr")
@click.argument("binding")
@click.argument("key")
@click.option("--amount", type=int, default=1, show_default=True, help="What to add (may be < 0).")
@click.option(
    "--ttl", type=int, default=None, help="Seconds to live, if this creates the key (>= 1)."
)
def cache_incr(binding: str, key: str, amount: int, ttl: int | None) -> None:
    """Add --amount to the integer at KEY atomically (a missing key counts from 0); print it."""
    cache = _cache(binding)
    with _reporting(), _bad_argument("'KEY', '--amount' or '--ttl'"):
        click.echo(cache.incr(key, amount, ttl=ttl))


@cache_group.command("count")
@click.argument("binding")
def cache_count(binding: str) -> None:
    """Print the number of unexpired keys of BINDING's resource (scans Redis)."""
    cache = _cache(binding)
    with _reporting():
        click.echo(cache.count())


@cache_group.command("clear")
@click.argument("binding")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(binding: str, yes: bool) -> None:
    """Delete every key of BINDING's resource (other bindings on it too)."""
    cache = _cache(binding)
    if not yes:
        click.confirm(
            f"Delete every key of {binding} (resource {cache.resource!r}, on"
            f" {cache.backend.display_url})?",
            abort=True,
        )
    with _reporting():
        try:
            n = cache.clear()
        except cache.backend.errors as exc:
            raise click.ClickException(f"{binding}: {type(exc).__name__}: {exc}") from None
    click.echo(f"Deleted {_keys(n)} of {binding} (resource {cache.resource!r}).")
