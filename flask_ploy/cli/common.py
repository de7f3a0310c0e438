"""What the ``flask ploy`` commands share: the group, the app's extension,
binding checks, error reporting, progress bars and tables."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING

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


#: How the commands name the bindings' parameters in a usage error.
PARAM_NAMES = {
    "key": "KEY",
    "value": "VALUE",
    "ttl": "--ttl",
    "amount": "--amount",
    "metadata": "--metadata",
    "expires_at": "--expires-at",
}


@contextlib.contextmanager
def bad_argument(*params: str) -> Iterator[None]:
    """Turn the bindings' argument checks into a usage error (exit code 2)
    naming the parameter the message is about: the first of *params* that
    it names. A ``ValueError`` that names none of them is about the data
    (``incr`` on a stored value that is not an integer): an ``Error:`` with
    exit code 1."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        named = _named(str(exc), params)
        if not named and not isinstance(exc, TypeError):
            raise click.ClickException(str(exc)) from exc
        hint = [PARAM_NAMES[p] for p in (named or params)]  # click quotes and joins them
        raise click.BadParameter(str(exc), param_hint=hint) from exc


def _named(message: str, params: tuple[str, ...]) -> tuple[str, ...]:
    """The first of *params* that *message* names as a word, if any."""
    text = re.sub(r"'[^']*'", "''", message)  # a quoted key or value names nothing
    found = [(m.start(), p) for p in params if (m := re.search(rf"\b{p}\b", text))]
    return (min(found)[1],) if found else ()


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_regular_or_missing(path: str) -> bool:
    """Whether *path* (after symlinks) is a regular file or does not exist yet;
    raise a :class:`click.ClickException` for a directory."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise click.ClickException(f"cannot write {path}: it is a directory")
    return stat.S_ISREG(st.st_mode)


def _names_a_descriptor(path: str) -> bool:
    """Whether *path* is ``/dev/stdout``, ``/dev/fd/N`` or the like: an open
    file of the process, to write where it points, not to replace."""
    full = os.path.abspath(path)
    return (
        full in ("/dev/stdout", "/dev/stderr")
        or full.startswith(("/dev/fd/", "/proc/"))
        or os.path.realpath(full).startswith("/proc/")
    )


@contextlib.contextmanager
def output_file(path: str) -> Iterator[IO[bytes]]:
    """Open *path* to write it whole, as ``-o FILE`` does.

    A regular file, or a new one, is written under a temporary name beside
    it and renamed over it when the block ends without an error, so it is
    never seen half-written; a new file gets ``0666 & ~umask``, an existing
    one keeps its mode. A symlink is followed: the file it points to is
    replaced, the link stays. Anything else (a FIFO, a device, and
    ``/dev/stdout`` whatever it is) is opened and written directly. A
    directory is an error.
    """
    if not is_regular_or_missing(path) or _names_a_descriptor(path):
        try:
            direct = open(path, "wb")  # noqa: SIM115
        except OSError as exc:
            raise click.ClickException(f"cannot write {path}: {exc}") from None
        with direct:
            yield direct
        return
    real = os.path.realpath(path)
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ploy-", dir=os.path.dirname(real))
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            yield out
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
