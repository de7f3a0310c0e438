"""Exceptions raised by flask-ploy.

Every exception the extension raises on purpose derives from
:class:`PloyError`, except the plain :class:`TypeError` and
:class:`ValueError` raised for bad arguments (a wrong type, an empty or
oversize key, a bad TTL), which follow Python's own conventions.
"""

from __future__ import annotations


class PloyError(Exception):
    """Base class of every flask-ploy error."""


class PloyConfigError(PloyError):
    """``ploy.yaml`` or a ``PLOY_*`` setting is invalid.

    Raised by :meth:`~flask_ploy.FlaskPloy.init_app`. The message names the
    file (or config key), the offending binding or key, and what is wrong.
    """


class CacheUnavailable(PloyError):
    """The cache backend could not be reached, or did not answer in time.

    ``get``, ``get_many``, ``set``, ``set_many`` and ``delete`` raise it only
    when ``PLOY_CACHE_ON_ERROR = "raise"``; ``incr`` and ``add`` always raise
    it, because they have no safe answer without the server.
    """


class StateUnavailable(PloyError):
    """The state database failed: it is down, unreachable, read-only or full.

    Nothing was written by the operation that raised it, unless it is the
    subclass :class:`StateInDoubt`. Also raised when an operation waited
    ``PLOY_STATE_BUSY_TIMEOUT`` seconds for a lock, or
    ``PLOY_STATE_POOL_TIMEOUT`` seconds for a pooled connection.
    """


class UnknownBinding(PloyError, AttributeError):
    """``g.env`` has no binding of that name.

    A subclass of :class:`AttributeError`, so ``hasattr(g.env, "X")`` and
    ``getattr(g.env, "X", None)`` work as usual.
    """


class StateInDoubt(StateUnavailable):
    """The connection broke after a write was sent: it may or may not have
    been applied.

    Raised instead of :class:`StateUnavailable` only by writes that are not
    idempotent (``incr``, ``add``, ``delete``, ``update``...); ``set`` and
    ``set_many`` run once more on a new connection instead. Read the value
    before trying such a write again.
    """
