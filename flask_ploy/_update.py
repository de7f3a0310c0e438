"""Ploy's JSON update operators, applied to a decoded JSON object.

``$set``, ``$unset``, ``$inc``, ``$push`` and ``$pop``, each mapping dotted
paths (``"a.b.c"``) to operands, as in MongoDB. Intermediate objects are
created as needed. A path may appear under one operator only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

OPERATORS = ("$set", "$unset", "$inc", "$push", "$pop")


def _split(path: Any, op: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{op}: a path must be a non-empty str, not {path!r}")
    parts = path.split(".")
    if any(not p for p in parts):
        raise ValueError(f"{op}: path {path!r} has an empty segment")
    return parts


def check_ops(ops: Any) -> list[tuple[str, list[str], Any]]:
    """Validate *ops*; return ``(operator, path parts, operand)`` steps.

    :raises TypeError: *ops* or an operator's operand is not a mapping.
    :raises ValueError: An unknown operator, a bad path or operand, or two
        operators touching the same path.
    """
    if not isinstance(ops, Mapping):
        raise TypeError(
            f"update ops must be a dict such as {{'$set': {{'a': 1}}}}, not {type(ops).__name__}"
        )
    if not ops:
        raise ValueError("update ops must name at least one operator")
    steps: list[tuple[str, list[str], Any]] = []
    seen: dict[str, str] = {}
    for op, fields in ops.items():
        if op not in OPERATORS:
            raise ValueError(f"unknown update operator {op!r}; use one of {', '.join(OPERATORS)}")
        if not isinstance(fields, Mapping) or not fields:
            raise TypeError(f"{op} needs a non-empty dict of path: operand, not {fields!r}")
        for path, operand in fields.items():
            parts = _split(path, op)
            for other, other_op in seen.items():
                if path == other or path.startswith(other + ".") or other.startswith(path + "."):
                    raise ValueError(f"{op} {path!r} conflicts with {other_op} {other!r}")
            seen[path] = op
            if op == "$inc" and (
                isinstance(operand, bool)
                or not isinstance(operand, (int, float))
                or (isinstance(operand, float) and not math.isfinite(operand))
            ):
                raise ValueError(f"$inc {path!r}: amount must be a finite number, not {operand!r}")
            if op == "$pop" and (isinstance(operand, bool) or operand not in (1, -1)):
                raise ValueError(
                    f"$pop {path!r}: operand must be 1 (last) or -1 (first), not {operand!r}"
                )
            if op in ("$set", "$push"):
                try:
                    json.dumps(operand, allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"{op} {path!r}: operand is not JSON-serializable: {exc}"
                    ) from None
            steps.append((op, parts, operand))
    return steps


def _parent(doc: dict[str, Any], parts: list[str], create: bool) -> dict[str, Any] | None:
    node = doc
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            if not create:
                return None
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ValueError(f"cannot reach {'.'.join(parts)!r}: {where!r} is not an object")
        node = child
    return node


def apply_ops(doc: dict[str, Any], steps: list[tuple[str, list[str], Any]]) -> dict[str, Any]:
    """Apply validated *steps* to *doc* in place and return it.

    :raises ValueError: A step does not fit the document (``$inc`` on a
        non-number, ``$push`` or ``$pop`` on a non-array, a path through a
        non-object).
    """
    for op, parts, operand in steps:
        path = ".".join(parts)
        parent = _parent(doc, parts, create=op not in ("$unset", "$pop"))
        leaf = parts[-1]
        if op == "$set":
            assert parent is not None
            parent[leaf] = operand
        elif op == "$unset":
            if parent is not None:
                parent.pop(leaf, None)
        elif op == "$inc":
            assert parent is not None
            current = parent.get(leaf, 0)
            if isinstance(current, bool) or not isinstance(current, (int, float)):
                raise ValueError(f"$inc {path!r}: the current value {current!r} is not a number")
            parent[leaf] = current + operand
        elif op == "$push":
            assert parent is not None
            current = parent.get(leaf)
            if current is None:
                parent[leaf] = [operand]
            elif isinstance(current, list):
                current.append(operand)
            else:
                raise ValueError(f"$push {path!r}: the current value is not an array")
        elif op == "$pop":
            current = None if parent is None else parent.get(leaf)
            if current is None:
                continue
            if not isinstance(current, list):
                raise ValueError(f"$pop {path!r}: the current value is not an array")
            if current:
                current.pop(-1 if operand == 1 else 0)
    return doc


def decode_object(raw: str | None, key: str) -> dict[str, Any]:
    """Decode the stored value of *key* for ``update``; ``{}`` when missing.

    :raises ValueError: The value is not a JSON object.
    """
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = raw
    if not isinstance(doc, dict):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ValueError(
            f"value of {key!r} is not a JSON object, so update cannot apply: {shown!r}"
        )
    return doc


def encode_object(doc: dict[str, Any]) -> str:
    """Encode *doc* compactly, as JavaScript's ``JSON.stringify`` does."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
