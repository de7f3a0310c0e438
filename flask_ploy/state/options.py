"""The options of a State write: ``metadata``, ``ttl`` and ``expires_at``.

Ploy's ``put(key, value, {metadata, expirationTtl, expiration})`` is
``set(key, value, metadata=, ttl=, expires_at=)`` here. The functions below
check them before anything is written, and turn them into what the table
stores: the metadata as compact JSON text, the expiry as epoch seconds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .._validate import MAX_TTL, check_ttl

#: The most bytes a key's metadata may take, as compact JSON in UTF-8 (as
#: on Cloudflare Workers KV, whose API Ploy's State follows).
MAX_METADATA_BYTES = 1024

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode_metadata(key: str, metadata: Any) -> str | None:
    """*metadata* as the compact JSON text the table stores; ``None`` for none.

    :param metadata: ``None``, or a ``dict`` with ``str`` keys that JSON
        represents exactly (``str``, ``int``, finite ``float``, ``bool``,
        ``None``, lists and dicts of them).
    :raises TypeError: *metadata* is not a dict, or holds something JSON
        cannot represent (a tuple, a set, bytes, a non-``str`` dict key...).
    :raises ValueError: It is over :data:`MAX_METADATA_BYTES`, holds NaN or
        infinity or a lone surrogate, or nests too deeply.

    Every message names *key*.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TypeError(
            f"metadata of {key!r} must be a dict (a JSON object) or None,"
            f" not {type(metadata).__name__}"
        )
    try:
        text = _encode(metadata)
        size = len(text.encode("utf-8"))
    except TypeError as exc:
        raise TypeError(f"metadata of {key!r} is not JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # NaN, a circular reference, surrogates
        raise ValueError(f"metadata of {key!r} is not JSON: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata of {key!r} is {size} bytes as JSON, over the limit of"
            f" {MAX_METADATA_BYTES}; keep large data in the value"
        )
    if json.loads(text) != metadata:  # a tuple, an int dict key: would come back changed
        raise TypeError(
            f"metadata of {key!r} would not come back as given: use only dict (str keys),"
            " list, str, int, float, bool and None"
        )
    return text


def decode_metadata(text: str | None) -> dict[str, Any] | None:
    """The stored metadata *text* as a dict (``None`` when there is none)."""
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def expiry(key: str, ttl: Any, expires_at: Any, now: float | None = None) -> float | None:
    """When a value written now with *ttl* or *expires_at* expires, in epoch
    seconds; ``None`` (never) when both are ``None``.

    :param ttl: Seconds from now: an ``int`` from 1 to 100 years, or a
        whole-second :class:`~datetime.timedelta` (as ``Cache.set``'s).
    :param expires_at: An absolute time: epoch seconds (``int`` or
        ``float``) or a timezone-aware :class:`~datetime.datetime`; in the
        future, within 100 years.
    :raises TypeError: A wrong type (a bool, a str, a naive datetime).
    :raises ValueError: Both are given, *ttl* is out of range, or
        *expires_at* is not in the future. The message names *key*.
    """
    if ttl is None and expires_at is None:
        return None
    if now is None:
        now = time.time()
    if ttl is not None:
        if expires_at is not None:
            raise ValueError(
                f"set {key!r}: give ttl (Ploy's expirationTtl) or expires_at (Ploy's"
                " expiration), not both"
            )
        try:
            return now + check_ttl(ttl)  # type: ignore[operator]
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"set {key!r}: {exc}") from None
    if isinstance(expires_at, datetime):
        if expires_at.tzinfo is None or expires_at.utcoffset() is None:
            raise TypeError(
                f"set {key!r}: expires_at must be timezone-aware"
                " (datetime.now(timezone.utc) + ...), not a naive datetime"
            )
        at = expires_at.timestamp()
    elif isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool):
        try:
            at = float(expires_at)
        except OverflowError:  # an int beyond any float
            raise ValueError(
                f"set {key!r}: expires_at is more than 100 years from now: {_shown(expires_at)}"
            ) from None
    else:
        raise TypeError(
            f"set {key!r}: expires_at must be epoch seconds (int or float) or an aware"
            f" datetime, not {type(expires_at).__name__}"
        )
    if not math.isfinite(at) or at <= now:
        raise ValueError(
            f"set {key!r}: expires_at must be in the future, got {at} (now is {now:.3f});"
            " delete the key instead"
        )
    if at > now + MAX_TTL:
        raise ValueError(f"set {key!r}: expires_at is more than 100 years from now: {at}")
    return at


def is_live(expires_at: Any, now: float) -> bool:
    """Whether a row whose ``expires_at`` column is *expires_at* is live at *now*."""
    return expires_at is None or expires_at > now


def _shown(number: float) -> str:
    """*number* for a message, short even for a huge int."""
    if isinstance(number, int) and number.bit_length() > 64:
        return f"an integer of {number.bit_length()} bits"
    return repr(number)


def check_entry(
    key: str, metadata: Mapping[str, Any] | None, expiration: Any
) -> tuple[str | None, float | None]:
    """The ``(metadata JSON, expires_at)`` of an entry being loaded (a dump's
    ``metadata`` and ``expiration``): as :func:`encode_metadata`, and an
    expiration of epoch seconds, past ones included (the loader skips them).

    :raises TypeError: A wrong type.
    :raises ValueError: A bad value; the message names *key*.
    """
    meta = encode_metadata(key, metadata)
    if expiration is None:
        return meta, None
    if not isinstance(expiration, (int, float)) or isinstance(expiration, bool):
        raise TypeError(
            f"expiration of {key!r} must be epoch seconds (a number), not"
            f" {type(expiration).__name__}"
        )
    try:
        at = float(expiration)
    except OverflowError:
        at = math.inf
    if not math.isfinite(at) or at <= 0 or at > time.time() + MAX_TTL:
        raise ValueError(
            f"expiration of {key!r} must be positive epoch seconds at most 100 years"
            f" from now: {_shown(expiration)}"
        )
    return meta, at
