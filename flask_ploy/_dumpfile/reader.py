"""Reading a dump: :class:`DumpReader`, in chunks, every record checked."""

from __future__ import annotations

import array
import codecs
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, NoReturn

from .._validate import check_key, check_value
from ..state.options import MAX_METADATA_BYTES, check_entry
from .jsontext import (
    CHUNK,
    BadInput,
    Repeated,
    Text,
    decode_json,
    decode_problem,
    json_type,
)
from .writer import Record


class DumpReader:
    """The records of a dump in either format, read in chunks: ``(key, value)``,
    or ``(key, value, metadata, expiration)`` when a record has either.

    The format is detected from the first character: ``[`` is a JSON array,
    ``{`` is JSON Lines. Every pair is checked as it is read; a bad one
    raises :class:`BadInput` naming the line. Iterable again if the file is
    seekable (:meth:`State.load` may run its transaction again after a lock
    conflict).

    Memory stays bounded: no line or array element longer than the longest
    valid record (every character of a maximal key and value escaped, 6 bytes
    each) is held, and nesting deeper than Python's recursion limit is a
    :class:`BadInput`. A key that appears twice is refused at the end (before
    the load commits): a dump holds each key once. Dumps come in key order,
    where a repeat is the previous key; for input in another order, a hash
    and a line number per key (16 bytes) find repeats at the end. A field
    twice in one object, and an integer Python will not convert (over
    ``sys.get_int_max_str_digits()`` digits), are a :class:`BadInput` too.

    Blank space before the first record is skipped a chunk at a time, and
    refused past the longest valid record. With *refuse_empty* (for ``load
    --replace``), an input without a record (empty or blank, as a failed
    ``dump`` leaves a pipe) is a :class:`BadInput`; an empty JSON array
    (``[]``) is not: it was written on purpose.
    """

    def __init__(
        self,
        stream: IO[bytes],
        name: str,
        max_key: int,
        max_value: int,
        progress: Callable[[int], None],
        refuse_empty: bool = False,
    ) -> None:
        self.stream = stream
        self.refuse_empty = refuse_empty
        self.name = name
        self.max_key = max_key
        self.max_value = max_value
        self.progress = progress
        self.format = ""
        try:
            self._start: int | None = stream.tell() if stream.seekable() else None
        except OSError:
            self._start = None
        self._started = False
        #: The longest line or array element a valid record can take, in bytes.
        self.max_element = 6 * (max_key + max_value + MAX_METADATA_BYTES) + 4096
        self._previous: str | None = None
        self._in_order = True
        self._hashes = array.array("q")
        self._lines = array.array("q")

    def __iter__(self) -> Iterator[Record]:
        if self._started:
            if self._start is None:
                raise BadInput(
                    f"{self.name}: the database asked to run the load again (a lock"
                    " conflict), and this input cannot be read twice; run the command"
                    " again"
                )
            self.stream.seek(self._start)
        self._started = True
        self._previous, self._in_order = None, True
        self._hashes, self._lines = array.array("q"), array.array("q")
        return self._pairs()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            data = self.stream.read(CHUNK)
            if not data:
                return
            self.progress(len(data))
            yield data

    def _pairs(self) -> Iterator[Record]:
        chunks = self._chunks()
        # A byte order mark, then blanks, skipped a chunk at a time: only the
        # current chunk is held, and at most max_element bytes are skipped.
        data = b""
        for more in chunks:
            data += more
            if len(data) >= len(codecs.BOM_UTF8):
                break
        data = data.removeprefix(codecs.BOM_UTF8)
        skipped = newlines = 0
        while True:
            body = data.lstrip(b" \t\r\n")
            skipped += len(data) - len(body)
            newlines += data.count(b"\n", 0, len(data) - len(body))
            if skipped > self.max_element:
                raise BadInput(
                    f"{self.name}, line {newlines + 1}: more blank space before the first"
                    f" record than any valid record takes ({self.max_element:,} bytes, for"
                    " PLOY_MAX_KEY_BYTES and PLOY_MAX_VALUE_BYTES); is it a dump?"
                )
            if body:
                break
            data = next(chunks, b"")
            if not data:
                break
        if not body:
            self.format = "empty"
            if self.refuse_empty:
                raise BadInput(
                    f"{self.name}: no records (an empty input); --replace would delete every"
                    " key and load nothing, as when the command writing a dump into a pipe"
                    " fails. To empty the resource on purpose, load an empty JSON array"
                    " ([]) with --replace, or delete the keys another way"
                )
            return
        rest = itertools.chain([body], chunks)
        if body[:1] == b"[":
            self.format = "json"
            pairs = self._json(rest, newlines + 1)
        elif body[:1] == b"{":
            self.format = "jsonl"
            pairs = self._jsonl(rest, newlines)
        else:
            raise BadInput(
                f"{self.name}, line {newlines + 1}: expected JSON Lines ({{...}} per line) or"
                f' a JSON array ([...]) of {{"key": ..., "value": ...}} objects, found'
                f" {body[:20].decode('utf-8', 'replace')!r}"
            )
        for pair, line in pairs:
            self._count(pair[0], line)
            yield pair
        self._refuse_repeats()

    def _count(self, key: str, line: int) -> None:
        """Note *key* (at *line*) for :meth:`_refuse_repeats`."""
        previous = self._previous
        if previous is not None and key <= previous:
            if key == previous:
                raise BadInput(
                    f"{self.name}, line {line}: key {key!r} again (it is on the record"
                    " before); a dump holds each key once, and loading it twice would"
                    " keep only the last value"
                )
            self._in_order = False
        self._previous = key
        self._hashes.append(hash(key))
        self._lines.append(line)

    def _refuse_repeats(self) -> None:
        """At the end: refuse a key that came twice, out of order."""
        if self._in_order:
            return
        hashes = self._hashes
        if len(set(hashes)) == len(hashes):
            return
        first: dict[int, int] = {}
        for h, line in zip(hashes, self._lines):
            if h in first:
                raise BadInput(
                    f"{self.name}, line {line}: a key that is on line {first[h]} too; a"
                    " dump holds each key once, and loading it twice would keep only the"
                    " last value"
                )
            first[h] = line

    def _jsonl(self, chunks: Iterable[bytes], line: int) -> Iterator[tuple[Record, int]]:
        """The records of *chunks*, whose first line is line *line* + 1."""
        parts: list[bytes] = []
        held = 0  # bytes of the unfinished line in parts
        for data in chunks:
            pieces = data.split(b"\n")
            if len(pieces) == 1:
                parts.append(data)
                held += len(data)
                if held > self.max_element:
                    self._too_long(line + 1)
                continue
            parts.append(pieces[0])
            if held + len(pieces[0]) > self.max_element:
                self._too_long(line + 1)
            pieces[0] = b"".join(parts)
            parts = [pieces.pop()]
            held = len(parts[0])
            for raw in pieces:
                line += 1
                if len(raw) > self.max_element:
                    self._too_long(line)
                if raw and not raw.isspace():
                    yield self._line(raw, line), line
        raw = b"".join(parts)
        if raw and not raw.isspace():
            yield self._line(raw, line + 1), line + 1

    def _too_long(self, line: int) -> NoReturn:
        raise BadInput(
            f"{self.name}, line {line}: longer than any valid record ({self.max_element:,}"
            " bytes, for PLOY_MAX_KEY_BYTES and PLOY_MAX_VALUE_BYTES); is it a JSON Lines"
            " dump?"
        )

    def _line(self, raw: bytes, line: int) -> Record:
        try:
            obj = decode_json(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"{self.name}, line {line}: not UTF-8 ({exc.reason} at byte {exc.start + 1}"
                " of the line)"
            ) from None
        except json.JSONDecodeError as exc:
            raise BadInput(
                f"{self.name}, line {line}: invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        except (RecursionError, Repeated, ValueError) as exc:
            problem = decode_problem(exc)
            if problem is None:
                raise
            raise BadInput(f"{self.name}, line {line}: {problem}") from None
        return self._pair(obj, line)

    def _json(self, chunks: Iterator[bytes], line: int) -> Iterator[tuple[Record, int]]:
        """The records of *chunks*, which start on line *line*."""
        text = Text(chunks, self.name, self.max_element, line)
        text.expect("[")
        if text.peek() == "]":
            text.pos += 1
        else:
            while True:
                obj, line = text.value()
                yield self._pair(obj, line), line
                c = text.peek()
                text.pos += 1
                if c == "]":
                    break
                if c != ",":
                    text.fail("expected ',' or ']' after an element" + text.found(c))
        if text.peek() != "":
            text.fail("extra data after the closing ']'")

    def _pair(self, obj: Any, line: int) -> Record:
        # The common case in a few cheap checks: two short strings. A key of
        # at most max_key // 4 characters fits in max_key bytes of UTF-8.
        if type(obj) is dict and len(obj) == 2:
            key = obj.get("key")
            value = obj.get("value")
            if (
                type(key) is str
                and type(value) is str
                and 0 < len(key) <= self.max_key // 4
                and len(value) * 4 <= self.max_value
            ):
                try:  # refuse lone surrogates, which UTF-8 cannot encode
                    if not key.isascii():
                        key.encode()
                    if not value.isascii():
                        value.encode()
                except UnicodeEncodeError:
                    pass
                else:
                    return key, value
        return self._checked_pair(obj, line)

    def _checked_pair(self, obj: Any, line: int) -> Record:
        where = f"{self.name}, line {line}"
        allowed = {"key", "value", "metadata", "expiration"}
        if type(obj) is not dict or not {"key", "value"} <= obj.keys() <= allowed:
            if type(obj) is not dict:
                problem = f"found {json_type(obj)}"
            else:
                missing = sorted({"key", "value"} - obj.keys())
                extra = sorted(obj.keys() - allowed)
                problem = "; ".join(
                    ([f"missing {', '.join(map(repr, missing))}"] if missing else [])
                    + ([f"unexpected {', '.join(map(repr, extra))}"] if extra else [])
                )
            raise BadInput(f'{where}: expected {{"key": ..., "value": ...}}: {problem}')
        key, value = obj["key"], obj["value"]
        for what, item in (("key", key), ("value", value)):
            if type(item) is not str:
                raise BadInput(
                    f"{where}: the {what} must be a string, found {json_type(item)}"
                    + ("; store structured data as a JSON string" if what == "value" else "")
                )
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise BadInput(
                        f"{where}: the {what} holds a lone surrogate"
                        f" ({item[exc.start]!r} at character {exc.start + 1}), which"
                        " UTF-8 cannot encode"
                    ) from None
        try:
            check_key(key, self.max_key)
            check_value(value, self.max_value)
        except ValueError as exc:
            raise BadInput(f"{where}: {exc}") from None
        metadata, expiration = obj.get("metadata"), obj.get("expiration")
        if metadata is None and expiration is None:
            return key, value
        try:
            check_entry(key, metadata, expiration)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{where}: {exc}") from None
        except OverflowError:  # an integer too big for a float
            raise BadInput(
                f"{where}: expiration of {key!r} must be epoch seconds: a number of"
                f" {len(str(expiration))} digits is out of range"
            ) from None
        return key, value, metadata, None if expiration is None else float(expiration)
