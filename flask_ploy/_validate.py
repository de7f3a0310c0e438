"""Argument checks shared by the cache and state bindings.

The bindings inline the cheap part of each check on their hot path and call
these functions only when that part fails, so a valid call costs a type
check and a length comparison.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

#: 64-bit signed range of counters, as in Redis.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

#: The longest TTL, in seconds: 100 years of 365.25 days. Redis refuses an
#: expiry past about 9.2e15 s from now (the millisecond clock would
#: overflow), and a longer TTL is not a TTL anyone means: use ``None``.
MAX_TTL = 3_155_760_000

#: A counter value: the canonical decimal form Redis accepts for INCRBY.
INT_RE = re.compile(r"(?:0|-?[1-9][0-9]{0,18})\Z")


def is_counter(value: str | None) -> bool:
    """Whether *value* is a canonical decimal integer in the 64-bit range."""
    return (
        value is not None and INT_RE.match(value) is not None and INT_MIN <= int(value) <= INT_MAX
    )


def _type_name(obj: object) -> str:
    return type(obj).__name__


def check_key(key: Any, max_bytes: int) -> None:
    """Raise unless *key* is a non-empty ``str`` of at most *max_bytes* in UTF-8.

    :raises TypeError: *key* is not a ``str``.
    :raises ValueError: *key* is empty, too long, or not encodable as UTF-8.
    """
    if type(key) is not str:
        if isinstance(key, str):  # a str subclass: accept
            return check_key(str(key), max_bytes)
        raise TypeError(f"key must be str, not {_type_name(key)}")
    if not key:
        raise ValueError("key must not be empty")
    size = len(key.encode("utf-8"))
    if size > max_bytes:
        raise ValueError(
            f"key is {size} bytes in UTF-8, over the limit of {max_bytes}"
            f" (PLOY_MAX_KEY_BYTES): {key[:40]!r}..."
        )
    return None


def check_value(value: Any, max_bytes: int) -> None:
    """Raise unless *value* is a ``str`` of at most *max_bytes* in UTF-8.

    :raises TypeError: *value* is not a ``str``; the message points at
        :func:`json.dumps` for structured data.
    :raises ValueError: *value* is too long, or not encodable as UTF-8.
    """
    if not isinstance(value, str):
        hint = (
            "; decode it first, e.g. value.decode()"
            if isinstance(value, (bytes, bytearray, memoryview))
            else "; serialize it first, e.g. json.dumps(value), or str(value)"
        )
        raise TypeError(f"value must be str, not {_type_name(value)}{hint}")
    if len(value) * 4 > max_bytes:
        size = len(value.encode("utf-8"))
        if size > max_bytes:
            raise ValueError(
                f"value is {size} bytes in UTF-8, over the limit of"
                f" {max_bytes} (PLOY_MAX_VALUE_BYTES)"
            )


def check_ttl(ttl: Any) -> int | None:
    """Return *ttl* as whole seconds, or ``None`` for no expiry.

    Every binding calls this before it writes anything, so a bad TTL never
    leaves half an operation done.

    :param ttl: ``None``, an ``int`` from 1 to :data:`MAX_TTL`, or a
        :class:`~datetime.timedelta` of whole seconds in that range.
    :raises TypeError: *ttl* is a bool, float, str or other type.
    :raises ValueError: *ttl* is below 1 or above :data:`MAX_TTL`, or a
        fractional timedelta.
    """
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
        if seconds != int(seconds):
            raise ValueError(f"ttl must be whole seconds, got {ttl!r}")
        ttl = int(seconds)
    elif type(ttl) is not int:
        if isinstance(ttl, int) and not isinstance(ttl, bool):
            ttl = int(ttl)
        else:
            raise TypeError(
                f"ttl must be an int number of seconds or a timedelta, not {_type_name(ttl)}"
            )
    if ttl < 1:
        raise ValueError(
            f"ttl must be at least 1 second, got {ttl}; leave it out (None) for no expiry"
        )
    if ttl > MAX_TTL:
        raise ValueError(
            f"ttl must be at most {MAX_TTL} seconds (100 years), got {ttl};"
            " use ttl=None for no expiry"
        )
    return int(ttl)


def check_amount(amount: Any) -> int:
    """Return *amount* if it is an ``int`` in the 64-bit signed range.

    :raises TypeError: *amount* is not an ``int`` (bools are refused).
    :raises ValueError: *amount* is out of range.
    """
    if type(amount) is not int:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be int, not {_type_name(amount)}")
        amount = int(amount)
    if not INT_MIN <= amount <= INT_MAX:
        raise ValueError(f"amount {amount} is outside the 64-bit integer range")
    return int(amount)


def check_keys(keys: Any, max_bytes: int) -> list[str]:
    """Return *keys* as a list after checking each key.

    :raises TypeError: *keys* is a ``str``/``bytes`` or not iterable, or a key
        is not a ``str``.
    """
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
        raise TypeError(f"keys must be an iterable of str (a list, say), not {_type_name(keys)}")
    out = list(keys)
    for key in out:
        check_key(key, max_bytes)
    return out


def check_mapping(mapping: Any, max_key: int, max_value: int) -> list[tuple[str, str]]:
    """Return the items of *mapping* after checking every key and value.

    :raises TypeError: *mapping* is not a mapping, or a key or value has the
        wrong type.
    """
    if not hasattr(mapping, "items"):
        raise TypeError(f"mapping must be a dict of str to str, not {_type_name(mapping)}")
    items = list(mapping.items())
    for key, value in items:
        check_key(key, max_key)
        check_value(value, max_value)
    return items


def not_integer(key: str, value: str | None, amount: int) -> ValueError:
    """The error raised by ``incr`` when it cannot add *amount* to *value*."""
    if is_counter(value):
        return ValueError(
            f"incr({key!r}, {amount}) would overflow the 64-bit integer range (value is {value})"
        )
    shown = value if value is None or len(value) <= 40 else value[:40] + "..."
    return ValueError(
        f"value of {key!r} is not an integer: {shown!r}; incr needs a decimal"
        f" integer string such as '42'"
    )
