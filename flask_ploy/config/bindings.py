"""The bindings of an app: ``ploy.yaml`` (or ``PLOY_BINDINGS``) checked by
the Ploy platform's rules.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PloyConfigError
from .yamlfile import located, read_file, short

#: The binding kinds flask-ploy serves.
KINDS = ("cache", "state")
#: Ploy's other binding maps: accepted, checked for name clashes, not served.
OTHER_BINDING_KINDS = ("db", "queue", "fs", "sandbox", "timer")

BINDING_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
RESOURCE_RE = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Binding:
    """One line of ``ploy.yaml``: ``NAME: resource`` under ``cache`` or ``state``."""

    name: str
    kind: str
    resource: str


@dataclass(frozen=True)
class Bindings:
    """The validated bindings of one app, in file order."""

    source: str
    bindings: tuple[Binding, ...]

    def of_kind(self, kind: str) -> list[Binding]:
        """The bindings of *kind* (``"cache"`` or ``"state"``)."""
        return [b for b in self.bindings if b.kind == kind]

    def get(self, name: str) -> Binding | None:
        """The binding called *name*, or ``None``."""
        for b in self.bindings:
            if b.name == name:
                return b
        return None


#: Ploy's top-level keys besides the binding maps: accepted and ignored.
PLOY_KEYS = (
    "kind",
    "name",
    "build",
    "out",
    "base",
    "main",
    "dev",
    "log_level",
    "compatibility_date",
    "compatibility_flags",
    "assets",
    "auth",
    "ai",
    "workflow",
    "cron",
)


def _name(value: Any) -> str:
    """A name as written, or :func:`short` if it is not a short str."""
    return value if isinstance(value, str) and len(value) <= 60 else short(value)


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The choice *name* most likely misspells (case-insensitive), or ``None``."""
    by_lower = {c.lower(): c for c in choices}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[close[0]] if close else None


def _check_top_level(doc: Mapping[Any, Any], source: str) -> None:
    """Refuse top-level keys that look like a misspelt section or a lost binding.

    Ploy's own keys, and keys that resemble nothing of ours, pass: Ploy may
    add keys, and one file serves the worker and the Flask app.
    """
    for key, value in doc.items():
        if not isinstance(key, str) or key in KINDS or key in OTHER_BINDING_KINDS:
            continue
        if key in PLOY_KEYS:
            continue
        where = located(source, doc, key)
        section = did_you_mean(key, KINDS)
        if section is not None and (value is None or isinstance(value, Mapping)):
            raise PloyConfigError(
                f"{where}: unknown top-level key {short(key)}: did you mean"
                f" '{section}'? flask-ploy reads bindings only from 'cache' and"
                " 'state' (lower case)"
            )
        if BINDING_RE.match(key) and isinstance(value, str) and RESOURCE_RE.match(value):
            kinds = [k for k in KINDS if k.upper() in key] or list(KINDS)
            pair = f"{_name(key)}: {_name(value)}"
            where_to = " or ".join(f"'{k}: {{{pair}}}'" for k in kinds)
            raise PloyConfigError(
                f"{where}: '{pair}' looks like a binding at the top level;"
                f" bindings go in a section, indented under it: did you mean {where_to}?"
            )


def validate(doc: Any, source: str) -> Bindings:
    """Check a parsed ``ploy.yaml`` document by Ploy's rules.

    :param doc: The parsed document.
    :param source: Where it came from, for error messages.
    :raises PloyConfigError: The document breaks a rule, or declares no
        ``cache`` or ``state`` binding.
    """
    if doc is None:
        raise PloyConfigError(
            f"{source}: the file is empty; expected a mapping such as 'cache: {{CACHE: default}}'"
        )
    if not isinstance(doc, Mapping):
        raise PloyConfigError(
            f"{source}: the top level must be a mapping, not {type(doc).__name__}"
        )
    _check_top_level(doc, source)
    bindings: list[Binding] = []
    seen: dict[str, str] = {}
    for kind in (*KINDS, *OTHER_BINDING_KINDS):
        if kind not in doc:
            continue
        section = doc[kind]
        if kind not in KINDS and not isinstance(section, Mapping):
            continue  # not ours to judge
        if not isinstance(section, Mapping):
            shown = "empty" if section is None else f"a {type(section).__name__}"
            raise PloyConfigError(
                f"{located(source, doc, kind)}: '{kind}' must be a mapping of"
                f" BINDING_NAME: resource_name, but it is {shown}"
            )
        for name, resource in section.items():
            where = located(source, section, name)
            shown_name = _name(name)
            if not isinstance(name, str) or not BINDING_RE.match(name):
                raise PloyConfigError(
                    f"{where}: {kind}.{shown_name}: binding name must match"
                    f" ^[A-Z][A-Z0-9_]*$ (for example CACHE or SESSION_CACHE)"
                )
            if name.startswith("PLOY_"):
                raise PloyConfigError(
                    f"{where}: {kind}.{shown_name}: binding names starting with"
                    " PLOY_ are reserved by Ploy"
                )
            if name in seen:
                raise PloyConfigError(
                    f"{where}: {kind}.{shown_name}: binding name already used under"
                    f" '{seen[name]}'; a binding name may appear only once"
                )
            seen[name] = kind
            if kind not in KINDS:
                continue
            if resource is None:
                raise PloyConfigError(
                    f"{where}: {kind}.{shown_name} has no resource name; write"
                    f" '{shown_name}: default' (the store the binding names)"
                )
            if not isinstance(resource, str) or not RESOURCE_RE.match(resource):
                raise PloyConfigError(
                    f"{where}: {kind}.{shown_name}: resource name {short(resource)} must"
                    f" match ^[a-z][a-z0-9_]*$ (for example default or sessions)"
                )
            bindings.append(Binding(name, kind, resource))
    if not bindings:
        raise PloyConfigError(
            f"{source}: no cache or state bindings, so g.env would be empty."
            " Declare at least one, for example 'cache: {CACHE: default}'"
            " or 'state: {STATE: default}'"
        )
    return Bindings(source, tuple(bindings))


def config_path(root_path: str, configured: str | os.PathLike[str] | None) -> str:
    """Resolve ``PLOY_CONFIG`` against the app's root path."""
    path = os.fspath(configured) if configured else "ploy.yaml"
    return os.path.normpath(os.path.join(root_path, path))


def load_bindings(config: Mapping[str, Any], root_path: str) -> Bindings:
    """Load the bindings of an app from its config.

    ``PLOY_BINDINGS`` (a mapping like the parsed file) wins when set; then
    the file at ``PLOY_CONFIG``, relative to *root_path*, default
    ``ploy.yaml``.

    :raises PloyConfigError: Both are set, the file is missing or unreadable,
        or the bindings break a rule.
    """
    inline = config.get("PLOY_BINDINGS")
    if inline is not None:
        if config.get("PLOY_CONFIG"):
            raise PloyConfigError(
                "app.config: set either PLOY_BINDINGS (inline bindings) or"
                " PLOY_CONFIG (a ploy.yaml path), not both"
            )
        return validate(inline, "app.config['PLOY_BINDINGS']")
    configured = config.get("PLOY_CONFIG")
    path = config_path(root_path, configured)
    return validate(read_file(path, hint=_not_found_hint(path, root_path, configured)), path)


def _not_found_hint(path: str, root_path: str, configured: str | os.PathLike[str] | None) -> str:
    """Why a ploy.yaml the user can see was not found: it is in the working
    directory, but relative paths are resolved against the app's root path."""
    relative = os.fspath(configured) if configured else "ploy.yaml"
    if os.path.isabs(relative):
        return ""
    try:
        candidate = os.path.abspath(relative)
    except OSError:  # the working directory was removed
        return ""
    if candidate == path or not os.path.isfile(candidate):
        return ""
    if configured:
        return (
            f". A relative PLOY_CONFIG is resolved against the app's root path"
            f" ({root_path}), not the working directory, where {candidate}"
            " exists: give its absolute path"
        )
    return (
        f". There is one in the working directory, {candidate}, but flask-ploy"
        f" looks beside the app, in app.root_path ({root_path}): move it there,"
        f" or set app.config['PLOY_CONFIG'] = {candidate!r}"
        " (FLASK_PLOY_CONFIG in the environment, with app.config.from_prefixed_env())"
    )
