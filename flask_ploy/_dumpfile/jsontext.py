"""JSON decoding for the dump reader: repeated fields refused, problems
named, and :class:`Text`, the decoded tail of a chunked UTF-8 stream."""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

#: Bytes read from a load file at a time.
CHUNK = 1 << 16


class BadInput(ValueError):
    """A load file that cannot be loaded; the message names the line.

    A :class:`ValueError`, so :meth:`State.load` rolls back and re-raises it.
    """


class Repeated(Exception):
    """A field twice in one JSON object (raised by :func:`_object`)."""


def object_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise Repeated(name)
            seen.add(name)
    return obj


_decoder = json.JSONDecoder(object_pairs_hook=object_hook)
decode_json = _decoder.decode


def decode_problem(exc: BaseException) -> str | None:
    """The message for an exception of decoding a JSON value, other than
    :class:`json.JSONDecodeError`; ``None`` if it is not about the input."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, Repeated):
        return f"the field {exc.args[0]!r} twice in one object (JSON would keep only the last one)"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
        return f"an integer of more than {limit} digits"
    return None


TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def json_type(obj: Any) -> str:
    if obj is None:
        return "null"
    return TYPE_NAMES.get(type(obj), "a number")


BLANKS = re.compile(r"[ \t\r\n]*")


def skip_blanks(buf: str, pos: int) -> int:
    """The first position at or after *pos* that is not JSON whitespace."""
    m = BLANKS.match(buf, pos)
    return m.end() if m else pos


class Text:
    """Decoded text of a chunked UTF-8 stream, for incremental JSON parsing.

    Keeps only the unparsed tail in memory, and the line number of any
    position at or after the last one asked about.
    """

    _decode = _decoder.raw_decode

    def __init__(self, chunks: Iterator[bytes], name: str, max_element: int, line: int = 1) -> None:
        self.chunks = chunks
        self.name = name
        self.max_element = max_element
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._line = line  # the line number at self._line_pos
        self._line_pos = 0

    def line_at(self, pos: int) -> int:
        if pos > self._line_pos:
            self._line += self.buf.count("\n", self._line_pos, pos)
            self._line_pos = pos
        return self._line

    def fail(self, message: str, pos: int | None = None) -> NoReturn:
        line = self.line_at(self.pos if pos is None else pos)
        raise BadInput(f"{self.name}, line {line}: {message}")

    def found(self, c: str) -> str:
        return ", found the end of the file" if c == "" else f", found {c!r}"

    def more(self, at_least: int = 1) -> bool:
        """Read at least *at_least* more characters; ``False`` at the end of the file."""
        if self.eof:
            return False
        if self.pos > CHUNK and self.pos * 2 > len(self.buf):
            self.line_at(self.pos)
            self.buf = self.buf[self.pos :]
            self._line_pos -= self.pos
            self.pos = 0
        got = 0
        parts = [self.buf]
        while got < at_least:
            data = next(self.chunks, None)
            try:
                text = self.decoder.decode(data or b"", final=data is None)
            except UnicodeDecodeError as exc:
                self.buf = "".join(parts)
                line = self.line_at(len(self.buf)) + (data or b"")[: exc.start].count(b"\n")
                raise BadInput(f"{self.name}, line {line}: not UTF-8 ({exc.reason})") from None
            parts.append(text)
            got += len(text)
            if data is None:
                self.eof = True
                break
        self.buf = "".join(parts)
        return got > 0

    def peek(self) -> str:
        """Skip whitespace; the next character, or ``""`` at the end of the file."""
        while True:
            buf = self.buf
            pos = self.pos = skip_blanks(buf, self.pos)
            if pos < len(buf):
                return buf[pos]
            if not self.more():
                return ""

    def expect(self, c: str) -> None:
        found = self.peek()
        if found != c:
            self.fail(f"expected {c!r}" + self.found(found))
        self.pos += 1

    def value(self) -> tuple[Any, int]:
        """Decode the JSON value at the next non-blank position; return it and its line."""
        if self.peek() == "":
            self.fail("the array is not closed: expected a value or ']'")
        line = self.line_at(self.pos)
        while True:
            try:
                obj, end = self._decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                tail = len(self.buf) - self.pos
                truncated = exc.pos >= len(self.buf) - 12 or exc.msg.startswith("Unterminated")
                if truncated and tail <= self.max_element and self.more(max(tail, CHUNK)):
                    continue
                self.fail(f"invalid JSON: {exc.msg}", exc.pos)
            except (RecursionError, Repeated, ValueError) as exc:
                problem = decode_problem(exc)
                if problem is None:
                    raise
                self.fail(problem, self.pos)
            if end == len(self.buf) and not isinstance(obj, (dict, list, str)) and self.more():
                continue  # a number or literal may go on in the next chunk
            self.pos = end
            return obj, line
