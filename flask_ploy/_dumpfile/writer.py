"""Writing a dump: JSON Lines or one JSON array, a page at a time."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring
from typing import IO, Any

#: Records written per page.
PAGE = 1000


def json_row(key: str, value: str) -> str:
    """One record: ``json.dumps({"key": key, "value": value}, ensure_ascii=False)``, faster."""
    return f'{{"key": {encode_basestring(key)}, "value": {encode_basestring(value)}}}'


#: A record: ``(key, value)``, or ``(key, value, metadata, expiration)``.
Record = tuple[str, str] | tuple[str, str, "dict[str, Any] | None", "float | None"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def record(row: Record) -> str:
    """One record of *row* as a line of JSON, ``metadata`` and ``expiration``
    only when set."""
    if len(row) == 2 or (row[2] is None and row[3] is None):
        return json_row(row[0], row[1])
    obj: dict[str, Any] = {"key": row[0], "value": row[1]}
    if row[2] is not None:
        obj["metadata"] = row[2]
    if row[3] is not None:
        obj["expiration"] = row[3]
    return str(_dumps(obj))


def write_dump(
    rows: Iterator[Record], out: IO[bytes], fmt: str, update: Callable[[int], None]
) -> int:
    """Write *rows* (``(key, value)`` or :class:`~flask_ploy.state.reads.Entry`)
    to *out* as ``jsonl`` or ``json`` (*fmt*), :data:`PAGE` rows at a time,
    calling *update* with each page's length; return how many."""
    n = 0
    sep = ",\n" if fmt == "json" else "\n"
    if fmt == "json":
        out.write(b"[")
    while True:
        page = list(itertools.islice(rows, PAGE))
        if not page:
            break
        text = sep.join(record(row) for row in page)
        if fmt == "json":
            text = ("\n" if n == 0 else ",\n") + text
        else:
            text += "\n"
        out.write(text.encode("utf-8"))
        n += len(page)
        update(len(page))
    if fmt == "json":
        out.write(b"\n]\n" if n else b"]\n")
    return n
