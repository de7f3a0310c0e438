"""The observed bindings: a proxy per binding that times and counts each
public operation and delegates it (:func:`observed`).

The proxy's methods are made from the binding class's public methods when
the class is first observed, so an operation added to
:class:`~flask_ploy.Cache` or :class:`~flask_ploy.State` later is observed
without a change here. ``isinstance(proxy, State)`` is true (the proxy
reports the binding's class, as :mod:`unittest.mock` does); attributes that
are not operations (``name``, ``resource``, ``backend``) are the binding's.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .observer import BindingObserver

#: Public methods that are not operations: never observed.
NOT_OPERATIONS = frozenset({"connection"})

_classes: dict[type, type] = {}
_lock = threading.Lock()


class Observed:
    """The base of every proxy class; see :func:`observed`."""

    __slots__ = ("_ploy_observer", "_ploy_target")

    def __init__(self, target: Any, observer: BindingObserver) -> None:
        object.__setattr__(self, "_ploy_target", target)
        object.__setattr__(self, "_ploy_observer", observer)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, State) is True
        return type(self._ploy_target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ploy_target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ploy_target, name, value)

    def __repr__(self) -> str:  # the binding's: the proxy passes for it
        return repr(self._ploy_target)

    def __dir__(self) -> list[str]:
        return dir(self._ploy_target)


def unwrap(binding: Any) -> Any:
    """The binding behind a proxy (or *binding* itself if it is none)."""
    if type(binding).__mro__[1:2] == (Observed,):
        return binding._ploy_target
    return binding


def operations(cls: type) -> list[str]:
    """The public methods of binding class *cls*: what a proxy observes."""
    return sorted(
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and name not in NOT_OPERATIONS and inspect.isfunction(member)
    )


def _method(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Observed, *args: Any, **kwargs: Any) -> Any:
        return self._ploy_observer.call(fn, self._ploy_target, op, args, kwargs)

    return method


def proxy_class(cls: type) -> type:
    """The proxy class for binding class *cls*, made once per class."""
    made = _classes.get(cls)
    if made is not None:
        return made
    with _lock:
        made = _classes.get(cls)
        if made is None:
            namespace: dict[str, Any] = {"__slots__": (), "__doc__": cls.__doc__}
            for op in operations(cls):
                namespace[op] = _method(op, getattr(cls, op))
            if "has" in namespace and hasattr(cls, "__contains__"):
                namespace["__contains__"] = lambda self, key: self.has(key)
            made = _classes[cls] = type(f"Observed{cls.__name__}", (Observed,), namespace)
    return made


def observed(binding: Any, observer: BindingObserver) -> Any:
    """A proxy of *binding* whose operations *observer* times and counts."""
    return proxy_class(type(binding))(binding, observer)
