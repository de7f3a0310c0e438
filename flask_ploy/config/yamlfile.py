"""Reading ``ploy.yaml`` safely: a bounded file, a safe loader that refuses
duplicate keys and bounds what aliases expand to, and errors that name the
line.
"""

from __future__ import annotations

import os
import reprlib
import stat
from typing import Any

import yaml

from ..errors import PloyConfigError

#: The largest ``ploy.yaml`` read, in bytes. A real one is a few KiB.
MAX_FILE_BYTES = 256 * 1024
#: The deepest nesting of mappings and sequences, aliases expanded.
MAX_DEPTH = 32
#: The most nodes (scalars, mappings, sequences) with every alias expanded.
MAX_NODES = 10_000
#: The most characters in scalars, with every alias expanded.
MAX_CHARS = 1024 * 1024


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


def located(source: str, mapping: Any, key: Any) -> str:
    """*source* and the line of *key* in *mapping*, when the loader recorded it."""
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
