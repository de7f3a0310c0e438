"""The ``flask ploy`` commands.

``FlaskPloy.init_app`` adds the ``ploy`` group to the app's CLI:

- ``flask ploy config``: the resolved bindings, passwords masked.
- ``flask ploy check``: ping every backend, exit 1 if one is down.
- ``flask ploy state get|set|delete|list|dump|load``: a State binding.
- ``flask ploy cache get|set|delete|ttl|incr|count|clear``: a Cache binding
  (not on ``memory://``).
- ``flask ploy types``: write the typed ``PloyEnv`` module.
- ``flask ploy stats``: the shared backends' counters (:mod:`flask_ploy.observe.cli`).

An unknown binding, or one of the other kind, is a usage error (exit code
2) that lists the valid bindings; a failing backend or bad input exits 1.
"""

from __future__ import annotations

from ..observe.cli import stats_command
from . import app, cache, state  # noqa: F401 (each module adds its commands to the group)
from .common import ploy_cli

ploy_cli.add_command(stats_command)

__all__ = ["ploy_cli"]
