"""``g.env``: the bindings of one app context, :class:`Env`."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from threading import get_ident
from typing import TYPE_CHECKING, Any

from .errors import UnknownBinding
from .state import Connections, State

if TYPE_CHECKING:
    from .app_bindings import AppBindings
    from .config import Binding


class _Unknown:
    """The message of an :class:`~flask_ploy.UnknownBinding`, built when shown.

    ``hasattr(g.env, "X")`` raises and catches one for every miss; the "did
    you mean" search is paid only by a message someone reads.
    """

    __slots__ = ("bindings", "name", "source")

    def __init__(self, name: str, source: str, bindings: tuple[Binding, ...]) -> None:
        self.name = name
        self.source = source
        self.bindings = bindings

    def __str__(self) -> str:
        valid = [b.name for b in self.bindings]
        guess = difflib.get_close_matches(self.name.upper(), valid, n=1)
        names = ", ".join(valid) or "(none)"
        said = f"g.env has no binding {self.name!r}"
        if guess:
            return f"{said}; did you mean {guess[0]}? The bindings in {self.source} are: {names}"
        return f"{said}; the bindings in {self.source} are: {names}"

    def __repr__(self) -> str:
        return repr(str(self))


class Env:
    """The bindings of one app context: ``g.env``.

    ``g.env.CACHE`` is a :class:`~flask_ploy.Cache` shared by the app;
    ``g.env.STATE`` is a :class:`~flask_ploy.State` made on first access in
    this context, whose connections go back to the pool when the context
    ends (:meth:`release`). An unknown name raises
    :class:`~flask_ploy.UnknownBinding` listing the valid ones.
    """

    def __init__(self, bindings: AppBindings) -> None:
        d = self.__dict__
        d.update(bindings.env_caches)
        d["_ploy"] = bindings
        d["_connections"] = None
        d["_owner"] = get_ident()  # the thread that pushed the context

    def __getattr__(self, name: str) -> Any:
        spec = self._ploy.states.get(name)
        if spec is None:
            if name.startswith("__"):
                raise AttributeError(name)
            bindings = self._ploy.bindings
            raise UnknownBinding(_Unknown(name, bindings.source, bindings.bindings))
        connections = self._connections
        if connections is None:
            connections = self.__dict__["_connections"] = Connections(self._owner)
        binding: Any = State(name, spec[1], spec[0], connections)
        observer = self._ploy.observer
        if observer is not None:
            binding = observer.wrap_state(binding, spec[0])
        self.__dict__[name] = binding
        return binding

    def __dir__(self) -> list[str]:
        return [b.name for b in self._ploy.bindings.bindings]

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dir__())

    def __contains__(self, name: object) -> bool:
        return name in self._ploy.caches or name in self._ploy.states

    def __repr__(self) -> str:
        return f"<Env {' '.join(self.__dir__())}>"

    def release(self) -> None:
        """Return the State connections this context borrowed to their pools.

        Flask-ploy calls it in ``teardown_appcontext``; call it yourself on
        an :class:`Env` you made. The State bindings of this Env cannot be
        used afterwards.
        """
        connections = self._connections
        if connections is None:  # nothing borrowed; refuse to borrow from now on
            connections = self.__dict__["_connections"] = Connections(self._owner)
        connections.release()
