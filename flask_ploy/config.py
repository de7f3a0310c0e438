"""Loading and validating ``ploy.yaml``.

:func:`load_bindings` reads the bindings of an app, from the file named by
``PLOY_CONFIG`` or from the inline ``PLOY_BINDINGS`` mapping, and checks them
by the Ploy platform's rules. Every problem raises
:class:`~flask_ploy.PloyConfigError` with the source, the offending key and
what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

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


class _Mapping(dict[Any, Any]):
    """A dict that remembers the line of each key, for error messages."""

    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and records key lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        self.flatten_mapping(node)
        result = _Mapping()
        result.lines = {}
        for key_node, value_node in node.value:
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
            if key in result:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {result.lines[key]})",
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
    """Parse *text* with a safe loader; YAML errors become PloyConfigError."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        if "could not determine a constructor" in str(exc):
            problem = (
                f"{problem}; ploy.yaml is read with yaml.safe_load, which"
                " refuses tags such as !!python/object"
            )
        raise PloyConfigError(f"{where}: invalid YAML: {problem}") from None


def read_file(path: str) -> Any:
    """Read and parse the YAML file at *path*."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise PloyConfigError(
            f"{path}: ploy.yaml not found. Create it beside your app, set"
            " PLOY_CONFIG to its path, or give the bindings inline in"
            " app.config['PLOY_BINDINGS']"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PloyConfigError(f"{path}: cannot read ploy.yaml: {exc}") from None
    return parse_yaml(text, path)


def validate(doc: Any, source: str) -> Bindings:
    """Check a parsed ``ploy.yaml`` document by Ploy's rules.

    :param doc: The parsed document.
    :param source: Where it came from, for error messages.
    :raises PloyConfigError: The document breaks a rule.
    """
    if doc is None:
        raise PloyConfigError(
            f"{source}: the file is empty; expected a mapping such as 'cache: {{CACHE: default}}'"
        )
    if not isinstance(doc, Mapping):
        raise PloyConfigError(
            f"{source}: the top level must be a mapping, not {type(doc).__name__}"
        )
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
            if not isinstance(name, str) or not BINDING_RE.match(name):
                raise PloyConfigError(
                    f"{where}: {kind}.{name}: binding name must match"
                    f" ^[A-Z][A-Z0-9_]*$ (for example CACHE or SESSION_CACHE)"
                )
            if name.startswith("PLOY_"):
                raise PloyConfigError(
                    f"{where}: {kind}.{name}: binding names starting with"
                    " PLOY_ are reserved by Ploy"
                )
            if name in seen:
                raise PloyConfigError(
                    f"{where}: {kind}.{name}: binding name already used under"
                    f" '{seen[name]}'; a binding name may appear only once"
                )
            seen[name] = kind
            if kind not in KINDS:
                continue
            if not isinstance(resource, str) or not RESOURCE_RE.match(resource):
                raise PloyConfigError(
                    f"{where}: {kind}.{name}: resource name {resource!r} must"
                    f" match ^[a-z][a-z0-9_]*$ (for example default or sessions)"
                )
            bindings.append(Binding(name, kind, resource))
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
    path = config_path(root_path, config.get("PLOY_CONFIG"))
    return validate(read_file(path), path)


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
            f" ':' (flask-ploy adds the separator), got {prefix!r}"
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
            f" ploy_state, got {table!r}"
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
            )
    bind = config.get("PLOY_STATE_BIND")
    return Settings(
        cache_url=config.get("PLOY_CACHE_URL"),
        cache_resources=resources["cache"],
        cache_options=_mapping(config, "PLOY_CACHE_OPTIONS"),
        cache_key_prefix=prefix,
        cache_on_error=on_error,
        cache_max_entries=_number(config, "PLOY_CACHE_MAX_ENTRIES", 1, True),
        cache_max_bytes=_number(config, "PLOY_CACHE_MAX_BYTES", 1, True),
        cache_cooldown=float(_number(config, "PLOY_CACHE_COOLDOWN", 0, False)),
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
