"""``flask ploy state get|set|delete|list|dump|load|purge``: one State binding."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Callable

import click
from flask import g

from .._dumpfile import PAGE, BadInput, DumpReader, write_dump
from ..state import LIST_MAX, State
from .common import (
    bad_argument,
    check_binding,
    current_bindings,
    n_keys,
    output_file,
    ploy_cli,
    progress,
    reporting,
)


def _state(name: str) -> State:
    """``g.env.<name>``, which must be a State binding."""
    check_binding(name, "state")
    state: State = getattr(g.env, name)
    return state


@ploy_cli.group("state")
def state_group() -> None:
    """Read, write, dump, load and purge a State binding."""


@state_group.command("get")
@click.argument("binding")
@click.argument("key")
@click.option(
    "--metadata",
    "with_metadata",
    is_flag=True,
    help='Print {"value": ..., "metadata": ...} as one line of JSON instead.',
)
def state_get(binding: str, key: str, with_metadata: bool) -> None:
    """Print the value of KEY; exit 1 if it is not set (or expired)."""
    state = _state(binding)
    with reporting(), bad_argument("key"):
        value, metadata = state.get_with_metadata(key)
    if value is None:
        raise click.ClickException(f"{binding} has no key {key!r}")
    if with_metadata:
        click.echo(json.dumps({"value": value, "metadata": metadata}, ensure_ascii=False))
    else:
        click.echo(value)


def _metadata(text: str | None) -> dict[str, object] | None:
    """The ``--metadata`` option: a JSON object."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="'--metadata'") from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object ({...})", param_hint="'--metadata'")
    return value


@state_group.command("set")
@click.argument("binding")
@click.argument("key")
@click.argument("value")
@click.option("--metadata", default=None, help="A JSON object stored with the value.")
@click.option(
    "--ttl", type=click.IntRange(min=1), default=None, help="Expire after this many seconds."
)
@click.option("--expires-at", type=float, default=None, help="Expire at this time (epoch seconds).")
def state_set(
    binding: str,
    key: str,
    value: str,
    metadata: str | None,
    ttl: int | None,
    expires_at: float | None,
) -> None:
    """Store VALUE under KEY (committed on return): no expiry unless asked."""
    state = _state(binding)
    meta = _metadata(metadata)
    with reporting(), bad_argument("key", "value", "metadata", "ttl", "expires_at"):
        state.set(key, value, metadata=meta, ttl=ttl, expires_at=expires_at)


@state_group.command("purge")
@click.argument("binding")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Stop after about this many."
)
def state_purge(binding: str, limit: int | None) -> None:
    """Delete the rows of keys that have expired (already invisible to reads)."""
    state = _state(binding)
    with reporting():
        n = state.purge_expired(limit=limit)
    click.echo(f"Purged {n_keys(n)} from {binding}.")


@state_group.command("delete")
@click.argument("binding")
@click.argument("key")
def state_delete(binding: str, key: str) -> None:
    """Delete KEY. Deleting a missing key is not an error."""
    state = _state(binding)
    with reporting(), bad_argument("key"):
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
    with reporting():
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
    help="File to write (- for stdout). A regular file is written under a temporary"
    " name, then renamed.",
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
    with reporting():
        total = state.count() if sys.stderr.isatty() else None
        with progress(total, f"Dumping {binding}", show_pos=True) as update:
            if output == "-":
                out = sys.stdout.buffer
                n = write_dump(state.entries(page_size=PAGE), out, fmt, update)
                out.flush()
            else:
                n = _dump_to_file(state, output, fmt, update)
    to = "" if output == "-" else f" to {output}"
    click.echo(f"Dumped {n_keys(n)} of {binding}{to}.", err=True)


def _dump_to_file(state: State, path: str, fmt: str, update: Callable[[int], None]) -> int:
    try:
        with output_file(path) as out:
            return write_dump(state.entries(page_size=PAGE), out, fmt, update)
    except OSError as exc:  # a full disk, /dev/full, a closed FIFO
        raise click.ClickException(f"cannot write {path}: {exc}") from None


@state_group.command("load")
@click.argument("binding")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, exists=True))
@click.option(
    "--replace",
    is_flag=True,
    help="Delete every key of the resource first (same transaction). Refuses an input"
    " without records; load [] to empty the resource.",
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
    settings = current_bindings().settings
    stdin = file == "-"
    name = "<stdin>" if stdin else file
    stream = sys.stdin.buffer if stdin else open(file, "rb")  # noqa: SIM115
    try:
        size: int | None = None  # the progress bar's length, for a regular file
        if not stdin:
            with contextlib.suppress(OSError):
                st = os.fstat(stream.fileno())
                size = st.st_size if stat.S_ISREG(st.st_mode) else None
        with reporting(), progress(size, f"Loading {binding}", show_pos=False) as update:
            reader = DumpReader(
                stream,
                name,
                settings.max_key_bytes,
                settings.max_value_bytes,
                update,
                refuse_empty=replace,
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
        also = f"; --replace would first delete its {n_keys(existing)}" if replace else ""
        click.echo(f"Dry run: read {n_keys(n)} from {name} ({fmt}), all valid for {binding}{also}.")
        click.echo("Nothing was written.")
    else:
        how = " after deleting its previous keys" if replace else ""
        click.echo(f"Loaded {n_keys(n)} from {name} ({fmt}) into {binding}{how}.")
