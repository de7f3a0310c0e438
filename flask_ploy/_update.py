"""Ploy's JSON update operators, applied to a decoded JSON object.

``$set``, ``$unset``, ``$inc``, ``$push`` and ``$pop``, each mapping paths
to operands, with Ploy's semantics (its emulator turns each path into the
SQLite JSON path ``'$.' + path`` and nests ``json_set``/``json_remove``
calls):

- A path is segments joined by ``.``. A segment of digits is an array index
  (``t.1`` is the second element of ``t``); ``name[i]`` (also
  ``name[i][j]``) is element ``i`` of the array at ``name``.
- The operators apply in a fixed order, ``$set``, ``$unset``, ``$inc``,
  ``$push``, ``$pop``, whatever order the document lists them in; the paths
  of one operator in the document's order.
- Writing (``$set``, ``$inc``, ``$push``) creates what is missing on the
  way: an object before a name, an array before an index. An index may be
  at most the array's length; at the length, the value is appended.
- ``$unset`` removes a key, or an array element (the rest move up);
  ``$unset`` and ``$pop`` of a path that does not exist do nothing.
- ``$inc`` counts a missing or ``null`` value as 0.

Where Ploy silently does nothing or corrupts data, this module raises
:class:`ValueError` instead, and the caller writes nothing: a path through a
value that is neither object nor array, an index past the end, ``$inc`` of a
non-number, ``$push`` to or ``$pop`` from a non-array, two operators on
overlapping paths. docs/porting.rst lists each difference.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeAlias

OPERATORS = ("$set", "$unset", "$inc", "$push", "$pop")

#: The most segments (names and indexes) a path may have.
MAX_PATH_PARTS = 100

#: A path segment: an object key, or an array index.
Part: TypeAlias = str | int
Path: TypeAlias = tuple[Part, ...]
#: ``(operator, path as written, path parsed, operand)``.
Step: TypeAlias = tuple[str, str, Path, Any]

_INDEX = re.compile(r"[0-9]+")
_NAMED = re.compile(r"([^\[\]]+)((?:\[[0-9]+\])*)")
_BRACKET = re.compile(r"\[([0-9]+)\]")


class _Missing:
    """The value at a path that does not exist."""


_MISSING = _Missing()


def parse_path(path: Any, op: str) -> Path:
    """Split *path* into keys (``str``) and array indexes (``int``).

    :raises ValueError: *path* is not a non-empty ``str``, has an empty
        segment, or a segment that is neither a name, digits, nor
        ``name[digits]...``.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"{op}: a path must be a non-empty str, not {path!r}")
    if path.count(".") >= MAX_PATH_PARTS:
        raise ValueError(f"{op}: path {path[:40]!r}... has over {MAX_PATH_PARTS} segments")
    parts: list[Part] = []
    for seg in path.split("."):
        if not seg:
            raise ValueError(f"{op}: path {path!r} has an empty segment")
        if _INDEX.fullmatch(seg):
            parts.append(int(seg))
            continue
        m = _NAMED.fullmatch(seg)
        if m is None or seg.startswith('"'):
            raise ValueError(
                f"{op}: path {path!r}: segment {seg!r} is not a name, an index (digits)"
                " or name[index]"
            )
        parts.append(m.group(1))
        parts.extend(int(i) for i in _BRACKET.findall(m.group(2)))
    if len(parts) > MAX_PATH_PARTS:
        raise ValueError(f"{op}: path {path[:40]!r}... has over {MAX_PATH_PARTS} segments")
    return tuple(parts)


def _show(parts: Path) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return repr(out) if out else "the document"


def _overlaps(a: Path, b: Path) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _inside_array(unset: Path, other: Path) -> bool:
    """Whether *other* is inside the array that ``$unset`` *unset* removes an element of."""
    if not isinstance(unset[-1], int):
        return False
    array = unset[:-1]
    return len(other) > len(array) and other[: len(array)] == array


def check_ops(ops: Any) -> list[Step]:
    """Validate *ops*; return its steps (see :data:`Step`) in Ploy's order.

    :raises TypeError: *ops* or an operator's operand is not a mapping.
    :raises ValueError: An unknown operator, a bad path or operand, or two
        paths that overlap (one is the other or inside it, or one is inside
        an array from which ``$unset`` removes an element).
    """
    if not isinstance(ops, Mapping):
        raise TypeError(
            f"update ops must be a dict such as {{'$set': {{'a': 1}}}}, not {type(ops).__name__}"
        )
    if not ops:
        raise ValueError("update ops must name at least one operator")
    for op in ops:
        if op not in OPERATORS:
            raise ValueError(f"unknown update operator {op!r}; use one of {', '.join(OPERATORS)}")
    steps: list[Step] = []
    seen: list[tuple[str, str, Path]] = []
    for op in OPERATORS:
        if op not in ops:
            continue
        fields = ops[op]
        if not isinstance(fields, Mapping) or not fields:
            raise TypeError(f"{op} needs a non-empty dict of path: operand, not {fields!r}")
        for path, operand in fields.items():
            parts = parse_path(path, op)
            for other_op, other, other_parts in seen:
                if (
                    _overlaps(parts, other_parts)
                    or (other_op == "$unset" and _inside_array(other_parts, parts))
                    or (op == "$unset" and _inside_array(parts, other_parts))
                ):
                    raise ValueError(f"{op} {path!r} conflicts with {other_op} {other!r}")
            seen.append((op, path, parts))
            _check_operand(op, path, operand)
            steps.append((op, path, parts, operand))
    return steps


def _check_operand(op: str, path: str, operand: Any) -> None:
    if op == "$inc" and (
        isinstance(operand, bool)
        or not isinstance(operand, (int, float))
        or (isinstance(operand, float) and not math.isfinite(operand))
    ):
        raise ValueError(f"$inc {path!r}: amount must be a finite number, not {operand!r}")
    if op == "$pop" and (isinstance(operand, bool) or operand not in (1, -1)):
        raise ValueError(f"$pop {path!r}: operand must be 1 (last) or -1 (first), not {operand!r}")
    if op in ("$set", "$push"):
        try:
            json.dumps(operand, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{op} {path!r}: operand is not JSON-serializable: {exc}") from None
        except RecursionError:
            raise ValueError(f"{op} {path!r}: operand is nested too deeply") from None


def _fits(node: Any, part: Part) -> bool:
    """Whether *part* can address inside *node*: a name an object, an index an array."""
    return isinstance(node, list) if isinstance(part, int) else isinstance(node, dict)


def _child(node: Any, part: Part) -> Any:
    """The value at *part* of a container that :func:`_fits` it, or ``_MISSING``."""
    if isinstance(part, int):
        return node[part] if part < len(node) else _MISSING
    return node.get(part, _MISSING)


def _blocked(op: str, path: str, at: Path, node: Any, part: Part) -> ValueError:
    """The error for a path that goes through something that cannot hold *part*."""
    if isinstance(part, int):
        why = f"{_show(at)} is {_kind(node)}, not an array, so the index {part} cannot address it"
    else:
        why = (
            f"{_show(at)} is not an object (it is {_kind(node)}),"
            f" so the name {part!r} cannot address it"
        )
    return ValueError(f"{op} {path!r}: cannot reach it: {why}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _put(node: Any, part: Part, value: Any, op: str, path: str, at: Path) -> None:
    """Store *value* at *part* of *node*; an index may be at most the length."""
    if isinstance(part, int):
        if part < len(node):
            node[part] = value
        elif part == len(node):
            node.append(value)
        else:
            raise ValueError(
                f"{op} {path!r}: index {part} is past the end of {_show(at)}"
                f" (length {len(node)}); an index up to the length (which appends) can be written"
            )
    else:
        node[part] = value


def _parent(doc: dict[str, Any], op: str, path: str, parts: Path, create: bool) -> Any:
    """The container that holds the last segment of *parts* (*path*, parsed).

    With *create*, missing containers are made on the way (an object before
    a name, an array before an index) and a path through anything else
    raises; without, ``_MISSING`` is returned instead.
    """
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        at = parts[:i]
        if not _fits(node, part):
            if not create:
                return _MISSING
            raise _blocked(op, path, at, node, part)
        child = _child(node, part)
        if child is _MISSING:
            if not create:
                return _MISSING
            child = [] if isinstance(parts[i + 1], int) else {}
            _put(node, part, child, op, path, at)
        node = child
    if not _fits(node, parts[-1]):
        if not create:
            return _MISSING
        raise _blocked(op, path, parts[:-1], node, parts[-1])
    return node


def apply_ops(doc: dict[str, Any], steps: list[Step]) -> dict[str, Any]:
    """Apply validated *steps* to *doc* in place and return it.

    :raises ValueError: A step does not fit the document (a path through a
        value that is neither object nor array, an index past the end,
        ``$inc`` on a non-number, ``$push`` or ``$pop`` on a non-array).
        *doc* may be partly changed: the caller discards it.
    """
    for op, path, parts, operand in steps:
        parent = _parent(doc, op, path, parts, create=op not in ("$unset", "$pop"))
        if parent is _MISSING:
            continue
        leaf = parts[-1]
        at = parts[:-1]
        current = _child(parent, leaf)
        if op == "$set":
            _put(parent, leaf, operand, op, path, at)
        elif op == "$unset":
            if current is not _MISSING:
                del parent[leaf]
        elif op == "$inc":
            if current is _MISSING or current is None:
                current = 0
            elif isinstance(current, bool) or not isinstance(current, (int, float)):
                raise ValueError(f"$inc {path!r}: the current value {current!r} is not a number")
            _put(parent, leaf, current + operand, op, path, at)
        elif op == "$push":
            if current is _MISSING:
                _put(parent, leaf, [operand], op, path, at)
            elif isinstance(current, list):
                current.append(operand)
            else:
                raise ValueError(
                    f"$push {path!r}: the current value is {_kind(current)}, not an array"
                )
        elif op == "$pop":
            if current is _MISSING or current is None:
                continue
            if not isinstance(current, list):
                raise ValueError(
                    f"$pop {path!r}: the current value is {_kind(current)}, not an array"
                )
            if current:
                current.pop(-1 if operand == 1 else 0)
    return doc


def decode_object(raw: str | None, key: str) -> dict[str, Any]:
    """Decode the stored value of *key* for ``update``; ``{}`` when missing.

    :raises ValueError: The value is not a JSON object, or is nested too
        deeply to decode.
    """
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        doc = raw
    except ValueError as exc:  # valid JSON Python will not decode (a 5,000-digit integer)
        message = f"value of {key!r} cannot be decoded, so update cannot apply: {exc}"
        raise ValueError(message) from None
    except RecursionError:
        raise ValueError(
            f"value of {key!r} is nested too deeply to decode, so update cannot apply"
        ) from None
    if not isinstance(doc, dict):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ValueError(
            f"value of {key!r} is not a JSON object, so update cannot apply: {shown!r}"
        )
    return doc


def encode_object(doc: dict[str, Any]) -> str:
    """Encode *doc* compactly, as JavaScript's ``JSON.stringify`` does."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
