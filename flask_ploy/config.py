"""Loading and validating ``ploy.yaml``.

:func:`load_bindings` reads the bindings of an app, from the file named by
``PLOY_CONFIG`` or from the inline ``PLOY_BINDINGS`` mapping, and checks them
by the Ploy platform's rules. Every problem raises
:class:`~flask_ploy.PloyConfigError` with the source, the offending key and
what is wrong.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import reprlib
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ._validate import check_ttl
from .errors import PloyConfigError

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


#: The largest ``ploy.yaml`` read, in bytes. A real one is a few KiB.
MAX_FILE_BYTES = 256 * 1024
#: The deepest nesting of mappings and sequences, aliases expanded.
MAX_DEPTH = 32
#: The most nodes (scalars, mappings, sequences) with every alias expanded.
MAX_NODES = 10_000
#: The most characters in scalars, with every alias expanded.
MAX_CHARS = 1024 * 1024

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

_MERGE_TAG = "tag:yaml.org,2002:merge"

_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60
_SHORT.maxlevel = 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4
_SHORT.maxlong = 40


def short(value: Any) -> str:
    """A ``repr`` of *value* cut to a few dozen characters, for error messages.

    A hostile ``ploy.yaml`` can make a value of a billion elements out of a
    few aliases; its full ``repr`` must never be built.
    """
    return _SHORT.repr(value)


class _Mapping(dict[Any, Any]):
    """A dict that remembers the line of each key, for error messages."""

    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, records key lines,
    and bounds what a document may expand to.

    While composing, it counts nodes and scalar characters with every alias
    expanded, and the nesting depth, and stops at :data:`MAX_NODES`,
    :data:`MAX_CHARS` or :data:`MAX_DEPTH`: a "billion laughs" file fails
    after a few thousand nodes, before anything walks the expansion.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._chars = 0
        self._depth = 0
        # Expanded (nodes, chars, height) of each anchored node, once composed.
        self._anchored: dict[int, tuple[int, int, int]] = {}
        self._heights: list[int] = [0]

    def _count(self, nodes: int, chars: int, mark: Any) -> None:
        self._nodes += nodes
        self._chars += chars
        if self._nodes > MAX_NODES or self._chars > MAX_CHARS:
            what = (
                f"{MAX_NODES} values"
                if self._nodes > MAX_NODES
                else f"{MAX_CHARS} characters in its values"
            )
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the document holds more than {what}, counting each alias as a copy"
                " of what it names (a ploy.yaml needs a few dozen; is this an alias bomb?)",
                mark,
            )

    def _too_deep(self, mark: Any) -> yaml.YAMLError:
        return yaml.composer.ComposerError(
            None,
            None,
            f"nested more than {MAX_DEPTH} levels deep (aliases expanded)",
            mark,
        )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._anchored.get(id(target))
                if size is None:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"alias *{event.anchor} is inside its own anchor (a recursive structure)",
                        event.start_mark,
                    )
                nodes, chars, height = size
                if self._depth + height > MAX_DEPTH:
                    raise self._too_deep(event.start_mark)
                self._count(nodes, chars, event.start_mark)
                self._heights[-1] = max(self._heights[-1], height)
            return super().compose_node(parent, index)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if self._depth >= MAX_DEPTH:
            raise self._too_deep(event.start_mark)
        anchor = event.anchor
        before = (self._nodes, self._chars)
        self._depth += 1
        self._heights.append(0)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            height = self._heights.pop() + 1
        self._heights[-1] = max(self._heights[-1], height)
        if node is None:  # pragma: no cover - the composer always makes a node here
            return node
        chars = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        self._count(1, chars, node.start_mark)
        if anchor is not None:
            self._anchored[id(node)] = (
                self._nodes - before[0],
                self._chars - before[1],
                height,
            )
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            # A scalar the safe constructors choke on: a date such as
            # 2026-13-01, an integer of more than 4300 digits.
            shown = short(node.value) if isinstance(node, yaml.ScalarNode) else "here"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {shown}: {exc}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
        self.flatten_mapping(node)
        merged = len(node.value) - own  # flatten_mapping puts merged pairs first
        result = _Mapping()
        result.lines = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found an unhashable key",
                    key_node.start_mark,
                ) from None
            line = key_node.start_mark.line + 1
            if index < merged:
                # A merge key (<<): the first mapping merged wins, and the
                # mapping's own keys override it.
                if key not in result:
                    result[key] = self.construct_object(value_node, deep=deep)
                continue
            if key in result.lines:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {short(key)} (first on line {result.lines[key]})",
                    key_node.start_mark,
                )
            result[key] = self.construct_object(value_node, deep=deep)
            result.lines[key] = line
        return result


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _Loader.construct_mapping,
)


def _where(source: str, mapping: Any, key: Any) -> str:
    line = getattr(mapping, "lines", {}).get(key)
    return f"{source}, line {line}" if line else source


def parse_yaml(text: str, source: str) -> Any:
    """Parse *text* with a safe loader; YAML errors become PloyConfigError.

    The document may expand to at most :data:`MAX_NODES` nodes and
    :data:`MAX_CHARS` characters, nested :data:`MAX_DEPTH` deep.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        if len(problem) > 300:  # a tag or anchor name can be as long as the file
            problem = problem[:300] + "..."
        if "could not determine a constructor" in problem:
            problem = (
                f"{problem}; ploy.yaml is read with yaml.safe_load, which"
                " refuses tags such as !!python/object"
            )
        raise PloyConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:  # only if the caller's own stack is already deep
        raise PloyConfigError(f"{source}: invalid YAML: nested too deeply") from None


def _decode(data: bytes, path: str) -> str:
    """The text of a ploy.yaml: UTF-8 (a BOM is fine), or UTF-16 with a BOM."""
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        where = path if utf16 else f"{path}, line {line}"
        raise PloyConfigError(
            f"{where}: cannot read ploy.yaml: it is not"
            f" {'UTF-16' if utf16 else 'UTF-8'}"
            f" (byte {data[exc.start : exc.start + 1]!r} at offset {exc.start});"
            " save it as UTF-8"
        ) from None


def read_file(path: str, *, hint: str = "") -> Any:
    """Read and parse the YAML file at *path*.

    Only a regular file (or a link to one) of at most :data:`MAX_FILE_BYTES`
    is read: a directory, a FIFO or a device is refused before it is opened
    for reading, so a FIFO cannot block the app.

    :param hint: Added to the message when the file does not exist.
    """
    data = b""
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode):
            flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
            with os.fdopen(os.open(path, flags), "rb") as f:
                info = os.fstat(f.fileno())  # what was opened, not what was checked
                if stat.S_ISREG(info.st_mode):
                    data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise PloyConfigError(
            f"{path}: ploy.yaml not found. Create it beside your app, set"
            " PLOY_CONFIG to its path, or give the bindings inline in"
            f" app.config['PLOY_BINDINGS']{hint}"
        ) from None
    except OSError as exc:
        raise PloyConfigError(f"{path}: cannot read ploy.yaml: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        mode = info.st_mode
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
        )
        raise PloyConfigError(f"{path}: cannot read ploy.yaml: it is {kind}, not a regular file")
    if len(data) > MAX_FILE_BYTES:
        raise PloyConfigError(
            f"{path}: cannot read ploy.yaml: it is {max(info.st_size, len(data))} bytes;"
            f" the limit is {MAX_FILE_BYTES} ({MAX_FILE_BYTES // 1024} KiB)"
        )
    return parse_yaml(_decode(data, path), path)


def _name(value: Any) -> str:
    """A name as written, or :func:`short` if it is not a short str."""
    return value if isinstance(value, str) and len(value) <= 60 else short(value)


def _did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
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
        where = _where(source, doc, key)
        section = _did_you_mean(key, KINDS)
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
                f"{_where(source, doc, kind)}: '{kind}' must be a mapping of"
                f" BINDING_NAME: resource_name, but it is {shown}"
            )
        for name, resource in section.items():
            where = _where(source, section, name)
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


#: Every ``PLOY_*`` setting and its default, set on ``app.config`` by
#: :meth:`~flask_ploy.FlaskPloy.init_app`. Documented in docs/config.rst.
DEFAULTS: dict[str, Any] = {
    "PLOY_CONFIG": None,
    "PLOY_BINDINGS": None,
    "PLOY_CACHE_URL": None,
    "PLOY_CACHE_RESOURCES": {},
    "PLOY_CACHE_OPTIONS": {},
    "PLOY_CACHE_KEY_PREFIX": "ploy",
    "PLOY_CACHE_ON_ERROR": "miss",
    "PLOY_CACHE_MAX_ENTRIES": 10_000,
    "PLOY_CACHE_MAX_BYTES": 64 * 1024 * 1024,
    "PLOY_CACHE_COOLDOWN": 1.0,
    "PLOY_CACHE_DEFAULT_TTL": None,
    "PLOY_STATE_URL": None,
    "PLOY_STATE_RESOURCES": {},
    "PLOY_STATE_ENGINE_OPTIONS": {},
    "PLOY_STATE_BIND": None,
    "PLOY_STATE_TABLE": "ploy_state",
    "PLOY_STATE_SQLITE_SYNCHRONOUS": "NORMAL",
    "PLOY_STATE_SQLITE_WAL_LIMIT": 64 * 1024 * 1024,
    "PLOY_STATE_BUSY_TIMEOUT": 10.0,
    "PLOY_STATE_POOL_TIMEOUT": 10.0,
    "PLOY_MAX_KEY_BYTES": 512,
    "PLOY_MAX_VALUE_BYTES": 25 * 1024 * 1024,
}

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_MISSING = object()


def _from_env(raw: str) -> Any:
    """A variable's value as ``app.config.from_prefixed_env()`` reads it."""
    try:
        return json.loads(raw)
    except Exception:  # as Flask does: anything that is not JSON stays a str
        return raw


def _holds(config: Mapping[str, Any], key: str, nested: str, raw: str) -> bool:
    """Whether ``config[key]`` (or its ``a__b`` item) holds the variable's value."""
    current: Any = config.get(key, _MISSING)
    for part in nested.split("__") if nested else ():
        current = current.get(part, _MISSING) if isinstance(current, Mapping) else _MISSING
    if current is _MISSING:
        return False
    try:
        return bool(current == raw or current == _from_env(raw))
    except Exception:  # an object with a strange __eq__ in the config
        return False


def settings_warnings(config: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """What in *config* and *environ* looks meant for flask-ploy but has no effect.

    flask-ploy reads its settings only from ``app.config``; the environment
    reaches it through ``app.config.from_prefixed_env()`` as ``FLASK_PLOY_*``.
    Warned about, never with a value (it may be a password):

    - a ``PLOY_*`` key in *config* that is no setting (a typo);
    - a ``PLOY_<SETTING>`` variable whose value the app did not take;
    - a ``PLOY_*`` variable that misspells a setting (other ``PLOY_*``
      variables are left alone: they may be the platform's);
    - a ``FLASK_PLOY_*`` variable whose value is not in *config* (the app
      did not call ``from_prefixed_env()``, or set the key after it), or
      that names no setting.
    """
    warnings: list[str] = []
    suffixes = [k[len("PLOY_") :] for k in DEFAULTS]

    def close(name: str, cutoff: float) -> str | None:
        found = _did_you_mean(name[len("PLOY_") :], suffixes, cutoff)
        return f"PLOY_{found}" if found else None

    for key in sorted(k for k in config if isinstance(k, str)):
        if key.startswith("PLOY_") and key not in DEFAULTS:
            guess = close(key, 0.75)
            origin = f" (from the variable FLASK_{key})" if f"FLASK_{key}" in environ else ""
            warnings.append(
                f"app.config[{key!r}]{origin} is not a flask-ploy setting and has"
                f" no effect{f'; did you mean {guess}?' if guess else ''}"
            )
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith("FLASK_PLOY_"):
            head, sep, nested = name[len("FLASK_") :].partition("__")
            key = head.upper()
            exact = name.startswith("FLASK_") and head == key
            if key not in DEFAULTS:
                if exact and key in config:
                    continue  # reported above, as a key of app.config
                guess = close(key, 0.75)
                warnings.append(
                    f"environment variable {name} has no effect: it names no"
                    f" flask-ploy setting{f'; did you mean FLASK_{guess}?' if guess else ''}"
                )
            elif not exact:
                warnings.append(
                    f"environment variable {name} has no effect: variable names"
                    f" are case-sensitive; did you mean FLASK_{key}{sep}{nested}?"
                )
            elif not _holds(config, key, nested, environ[name]):
                warnings.append(
                    f"environment variable {name} has no effect: app.config[{key!r}]"
                    " does not hold its value. Call app.config.from_prefixed_env()"
                    f" before FlaskPloy(app), and do not set {key} after it"
                )
        elif upper.startswith("PLOY_"):
            head, sep, nested = name.partition("__")
            key = head.upper()
            if key in DEFAULTS:
                if head == key and _holds(config, key, nested, environ[name]):
                    continue  # the app read it itself
                warnings.append(
                    f"environment variable {name} has no effect: flask-ploy reads"
                    " its settings from app.config, not from PLOY_* variables. Name"
                    f" it FLASK_{key}{sep}{nested} and call"
                    " app.config.from_prefixed_env() before FlaskPloy(app)"
                )
                continue
            guess = close(key, 0.8)
            if guess is not None:
                warnings.append(
                    f"environment variable {name} has no effect: it names no"
                    f" flask-ploy setting; did you mean FLASK_{guess}?"
                )
    return warnings


@dataclass(frozen=True)
class Settings:
    """The checked ``PLOY_*`` settings of one app (URLs still unresolved).

    The URLs, per-resource URLs and client options may hold passwords, so
    they are left out of the repr.
    """

    cache_url: Any = field(repr=False)
    cache_resources: dict[str, Any] = field(repr=False)
    cache_options: dict[str, Any] = field(repr=False)
    cache_key_prefix: str
    cache_on_error: str
    cache_max_entries: int
    cache_max_bytes: int
    cache_cooldown: float
    cache_default_ttl: int | None
    state_url: str | None = field(repr=False)
    state_resources: dict[str, str] = field(repr=False)
    state_engine_options: dict[str, Any] = field(repr=False)
    state_bind: str | None
    state_table: str
    state_sqlite_synchronous: str
    state_sqlite_wal_limit: int
    state_busy_timeout: float
    state_pool_timeout: float
    max_key_bytes: int
    max_value_bytes: int


def _number(config: Mapping[str, Any], key: str, minimum: float, integer: bool) -> Any:
    value = config[key]
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise PloyConfigError(
            f"app.config[{key!r}] must be {'an int' if integer else 'a number'},"
            f" not {type(value).__name__}"
        )
    if value < minimum:
        raise PloyConfigError(f"app.config[{key!r}] must be at least {minimum:g}, got {value}")
    return value


def _mapping(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise PloyConfigError(f"app.config[{key!r}] must be a dict, not {type(value).__name__}")
    return dict(value)


def _json_note(key: str, value: Any) -> str:
    """Why a str setting may have arrived as a number: ``from_prefixed_env()``."""
    name = f"FLASK_{key}"
    if isinstance(value, str) or name not in os.environ:
        return ""
    return (
        f" ({name} in the environment was read as JSON by"
        f" app.config.from_prefixed_env(); write a string in double quotes inside"
        f" single ones, {name}='\"...\"')"
    )


def read_settings(config: Mapping[str, Any], bindings: Bindings) -> Settings:
    """Check the ``PLOY_*`` settings against each other and the bindings.

    :raises PloyConfigError: A setting has the wrong type or value, or a
        per-resource URL names a resource no binding uses.
    """
    on_error = config["PLOY_CACHE_ON_ERROR"]
    if on_error not in ("miss", "raise"):
        raise PloyConfigError(
            f"app.config['PLOY_CACHE_ON_ERROR'] must be 'miss' or 'raise', got {on_error!r}"
        )
    prefix = config["PLOY_CACHE_KEY_PREFIX"]
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise PloyConfigError(
            "app.config['PLOY_CACHE_KEY_PREFIX'] must be a non-empty str without"
            f" ':' (flask-ploy adds the separator), got {short(prefix)}"
            + _json_note("PLOY_CACHE_KEY_PREFIX", prefix)
        )
    max_key = _number(config, "PLOY_MAX_KEY_BYTES", 1, True)
    if max_key > 512:
        raise PloyConfigError(
            "app.config['PLOY_MAX_KEY_BYTES'] must be at most 512 (the state"
            f" table's key column holds 512 bytes), got {max_key}"
        )
    sync = str(config["PLOY_STATE_SQLITE_SYNCHRONOUS"]).upper()
    if sync not in _SYNCHRONOUS:
        raise PloyConfigError(
            "app.config['PLOY_STATE_SQLITE_SYNCHRONOUS'] must be one of"
            f" {', '.join(_SYNCHRONOUS)}, got {config['PLOY_STATE_SQLITE_SYNCHRONOUS']!r}"
        )
    table = config["PLOY_STATE_TABLE"]
    if not isinstance(table, str) or not re.match(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z", table):
        raise PloyConfigError(
            "app.config['PLOY_STATE_TABLE'] must be a SQL identifier such as"
            f" ploy_state, got {short(table)}" + _json_note("PLOY_STATE_TABLE", table)
        )
    resources: dict[str, dict[str, Any]] = {}
    for kind, key in (("cache", "PLOY_CACHE_RESOURCES"), ("state", "PLOY_STATE_RESOURCES")):
        resources[kind] = _mapping(config, key)
        used = sorted({b.resource for b in bindings.of_kind(kind)})
        for name in resources[kind]:
            if name not in used:
                raise PloyConfigError(
                    f"app.config[{key!r}] names resource {name!r}, which no {kind}"
                    f" binding in {bindings.source} uses; its {kind} resources are"
                    f" {', '.join(used) or '(none)'}"
                )
    for key in ("PLOY_CACHE_URL", "PLOY_STATE_URL"):
        url = config.get(key)
        if url is not None and not isinstance(url, str):
            raise PloyConfigError(
                f"app.config[{key!r}] must be a URL str, not {type(url).__name__}"
                + _json_note(key, url)
            )
    bind = config.get("PLOY_STATE_BIND")
    default_ttl = config.get("PLOY_CACHE_DEFAULT_TTL")
    try:
        default_ttl = check_ttl(default_ttl)
    except (TypeError, ValueError) as exc:
        raise PloyConfigError(
            f"app.config['PLOY_CACHE_DEFAULT_TTL']: {exc}"
            + _json_note("PLOY_CACHE_DEFAULT_TTL", default_ttl)
        ) from None
    return Settings(
        cache_url=config.get("PLOY_CACHE_URL"),
        cache_resources=resources["cache"],
        cache_options=_mapping(config, "PLOY_CACHE_OPTIONS"),
        cache_key_prefix=prefix,
        cache_on_error=on_error,
        cache_max_entries=_number(config, "PLOY_CACHE_MAX_ENTRIES", 1, True),
        cache_max_bytes=_number(config, "PLOY_CACHE_MAX_BYTES", 1, True),
        cache_cooldown=float(_number(config, "PLOY_CACHE_COOLDOWN", 0, False)),
        cache_default_ttl=default_ttl,
        state_url=config.get("PLOY_STATE_URL"),
        state_resources=resources["state"],
        state_engine_options=_mapping(config, "PLOY_STATE_ENGINE_OPTIONS"),
        state_bind=bind,
        state_table=table,
        state_sqlite_synchronous=sync,
        state_sqlite_wal_limit=_number(config, "PLOY_STATE_SQLITE_WAL_LIMIT", 1024 * 1024, True),
        state_busy_timeout=float(_number(config, "PLOY_STATE_BUSY_TIMEOUT", 0.001, False)),
        state_pool_timeout=float(_number(config, "PLOY_STATE_POOL_TIMEOUT", 0, False)),
        max_key_bytes=max_key,
        max_value_bytes=_number(config, "PLOY_MAX_VALUE_BYTES", 1, True),
    )
