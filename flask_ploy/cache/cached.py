"""``@ploy.cached("CACHE", ttl=...)``: a function's results in a cache binding.

The key of a call is the function's qualified name and its arguments, bound
to its parameters (so ``f(1)`` and ``f(x=1)`` are one key) and written as
JSON: the same in every process and on every machine, and never pickled.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, ParamSpec

from flask import g

from .flight import BETA, LOCK_TIMEOUT

P = ParamSpec("P")

#: Arguments longer than this (in UTF-8 bytes, as JSON) go into the key as a
#: SHA-256 digest, so a key stays within PLOY_MAX_KEY_BYTES.
MAX_ARGS_BYTES = 256

ALLOWED = "str, int, float, bool, None, or tuples of them"


def _check(value: Any, where: str) -> Any:
    """*value* as JSON sees it (tuples as lists), or :class:`TypeError`."""
    if value is None or type(value) in (str, int, float, bool):
        return value  # exact types: an IntEnum's 1 would share the key of 1
    if isinstance(value, tuple):
        return [_check(v, where) for v in value]
    raise TypeError(
        f"{where}: @cached arguments must be {ALLOWED} (the key is built from"
        f" them), not {type(value).__name__}"
    )


class CachedFunction(Generic[P]):
    """A function whose results are kept in a cache binding (``@ploy.cached``).

    Calling it returns the cached value for these arguments, or computes it
    with :meth:`Cache.get_or_set <flask_ploy.Cache.get_or_set>` (one
    computation at a time across processes, early recomputation). Needs an
    app context: the binding is ``g.env.<binding>``.
    """

    def __init__(
        self,
        fn: Callable[P, str],
        binding: str,
        ttl: int | timedelta | None,
        lock_timeout: float,
        beta: float,
        name: str | None = None,
    ) -> None:
        qualname = getattr(fn, "__qualname__", repr(fn))
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@cached cannot take {qualname}, an async def: the cache is synchronous;"
                " cache a plain function, and call it with asyncio.to_thread() if need be"
            )
        if name is None and ("<lambda>" in qualname or "<locals>" in qualname):
            raise TypeError(
                f"@cached on {qualname}: a lambda or a function defined inside another has"
                " no name of its own (every closure made by one factory would share its"
                " keys); give it one: @ploy.cached(..., name='...')"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError("@cached name must be a non-empty str")
        self.fn = fn
        self.binding = binding
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.beta = beta
        #: The key's first part: *name*, or the function's module and qualified name.
        self.name = name if name is not None else f"{fn.__module__}.{qualname}"
        self._signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<cached {self.name} in {self.binding}>"

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of a call with these arguments (without calling).

        :raises TypeError: The arguments do not fit the function, or one is
            not a str, int, float, bool, None, or a tuple of them.
        """
        where = f"{self.name}()"
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        parts = []
        for name, value in bound.arguments.items():
            kind = self._signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                value = tuple(sorted(value.items()))
            parts.append([name, _check(value, where)])
        text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
        if len(text.encode()) > MAX_ARGS_BYTES:
            text = "#sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return f"{self.name}:{text}"

    def _cache(self) -> Any:
        from .binding import Cache

        cache = getattr(g.env, self.binding)
        if not isinstance(cache, Cache):
            raise TypeError(
                f"@cached({self.binding!r}) on {self.name}: {self.binding} is not a cache binding"
            )
        return cache

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> str:
        key = self.key(*args, **kwargs)
        fn = self.fn

        def compute() -> str:
            return fn(*args, **kwargs)

        result: str = self._cache().get_or_set(
            key, compute, self.ttl, lock_timeout=self.lock_timeout, beta=self.beta
        )
        return result

    def uncached(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Call the function itself: no cache read or write."""
        return self.fn(*args, **kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the cached result of a call with these arguments; return
        whether there was one (:meth:`Cache.delete <flask_ploy.Cache.delete>`)."""
        deleted: bool = self._cache().delete(self.key(*args, **kwargs))
        return deleted


def cached(
    binding: str,
    ttl: int | timedelta | None = None,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    beta: float = BETA,
    name: str | None = None,
) -> Callable[[Callable[P, str]], CachedFunction[P]]:
    """The decorator behind :meth:`FlaskPloy.cached <flask_ploy.FlaskPloy.cached>`."""
    if not isinstance(binding, str):
        raise TypeError(f"cached() takes a binding name first, not {type(binding).__name__}")

    def decorate(fn: Callable[P, str]) -> CachedFunction[P]:
        return CachedFunction(fn, binding, ttl, lock_timeout, beta, name)

    return decorate
