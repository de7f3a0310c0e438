"""What the ``flask ploy`` commands share: the group, the app's extension,
binding checks, error reporting, progress bars and tables."""

from __future__ import annotations

import contextlib
import difflib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import PloyError

if TYPE_CHECKING:
    from ..app_bindings import AppBindings
    from ..extension import FlaskPloy


ploy_cli = AppGroup("ploy", help="Inspect and manage the Ploy bindings of this app.")


def extension() -> FlaskPloy:
    """The app's FlaskPloy, or a clear error if it has none."""
    ext: FlaskPloy | None = current_app.extensions.get("ploy")
    if ext is None:
        raise click.ClickException(
            f"The app {current_app.import_name!r} does not use flask-ploy: create"
            " FlaskPloy(app), or call ploy.init_app(app), in the app or its factory"
        )
    return ext


def current_bindings() -> AppBindings:
    return extension().app_bindings()


@contextlib.contextmanager
def reporting() -> Iterator[None]:
    """Turn flask-ploy errors into a one-line ``Error: ...`` and exit code 1."""
    try:
        yield
    except PloyError as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def bad_argument(hint: str) -> Iterator[None]:
    """Turn the bindings' argument checks into a usage error (exit code 2)."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from exc


def check_binding(name: str, kind: str) -> None:
    """Raise a usage error unless *name* is a binding of *kind*."""
    bindings = current_bindings().bindings
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


@contextlib.contextmanager
def progress(length: int | None, label: str, show_pos: bool) -> Iterator[Callable[[int], None]]:
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


def n_keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


def echo_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print *rows* in left-aligned columns under *header* (like ``flask routes``)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
