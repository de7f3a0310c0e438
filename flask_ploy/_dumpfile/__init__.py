"""The dump format of ``flask ploy state dump`` and ``load``: writer and reader.

A dump is JSON Lines (one ``{"key": ..., "value": ...}`` object per line) or
one JSON array of such objects, in UTF-8. A record may also hold
``"metadata"`` (a JSON object of at most 1024 bytes) and ``"expiration"``
(epoch seconds), present only when the key has them; dumps without them
(flask-ploy 0.1) load as before. :func:`write_dump` writes either;
:class:`DumpReader` reads either from a byte stream in chunks, checks every
pair as it goes, and raises :class:`BadInput` naming the line of the first
problem. Neither holds more than a page (writing) or a bounded element
(reading) in memory.
"""

from __future__ import annotations

from .jsontext import CHUNK, BadInput
from .reader import DumpReader
from .writer import PAGE, Record, json_row, record, write_dump

__all__ = ["CHUNK", "PAGE", "BadInput", "DumpReader", "Record", "json_row", "record", "write_dump"]
