"""Get, set and delete as JSON, and the seed docs' "Basic Example" workers.

The first group takes the key (and value, and ttl) as query or form fields,
so a load test can hit them with plain GET and POST requests. They work on
``CACHE`` and ``STATE`` unless ``binding=`` names another binding of the
same kind (``SESSION_CACHE``, ``USER_STATE``): each binding has its own
keys, even when two use the same server.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, abort, current_app, g, request
from flask.typing import ResponseReturnValue

bp = Blueprint("basics", __name__)


def _field(name: str) -> str:
    value = request.values.get(name)
    if value is None:
        abort(400, f"missing field {name!r}")
    return value


def _binding(kind: str, default: str) -> Any:
    """The binding named by ``binding=`` (default *default*), if of *kind*."""
    name = request.values.get("binding", default)
    names = [b.name for b in current_app.extensions["ploy"].bindings().of_kind(kind)]
    if name not in names:
        abort(400, f"{name!r} is not a {kind} binding; use one of {', '.join(names)}")
    return getattr(g.env, name)


def _ttl() -> int | None:
    raw = request.values.get("ttl") or None
    if raw is None:
        return None
    try:
        return int(raw)  # the binding refuses 0 and negatives with a ValueError: 400
    except ValueError:
        abort(400, f"ttl must be whole seconds, got {raw!r}")


# -- Cache -------------------------------------------------------------------


@bp.get("/cache/get")
def cache_get() -> ResponseReturnValue:
    """Read ``key`` from a cache binding: its value, or null."""
    # None (JSON null) when the key is missing, expired, evicted, or the
    # cache is down: a cache is best-effort, so all four look the same.
    return {"value": _binding("cache", "CACHE").get(_field("key"))}


@bp.post("/cache/set")
def cache_set() -> ResponseReturnValue:
    """Store ``value`` under ``key`` in a cache binding, with an optional ``ttl``."""
    _binding("cache", "CACHE").set(_field("key"), _field("value"), ttl=_ttl())
    return {"success": True}


@bp.post("/cache/delete")
def cache_delete() -> ResponseReturnValue:
    """Delete ``key`` from a cache binding: whether it was there."""
    return {"deleted": _binding("cache", "CACHE").delete(_field("key"))}


# -- State -------------------------------------------------------------------


@bp.get("/state/get")
def state_get() -> ResponseReturnValue:
    """Read ``key`` from a state binding: its value, or null."""
    return {"value": _binding("state", "STATE").get(_field("key"))}


@bp.post("/state/set")
def state_set() -> ResponseReturnValue:
    """Store ``value`` under ``key`` in a state binding, durably."""
    _binding("state", "STATE").set(_field("key"), _field("value"))  # committed on return
    return {"success": True}


@bp.post("/state/delete")
def state_delete() -> ResponseReturnValue:
    """Delete ``key`` from a state binding: whether it was there."""
    return {"deleted": _binding("state", "STATE").delete(_field("key"))}


@bp.get("/whoami")
def whoami() -> ResponseReturnValue:
    """Which worker process answered: tells gunicorn's workers apart."""
    return {"pid": os.getpid()}


# -- The seed docs' "Basic Example" workers, path for path --------------------
# The TypeScript workers answer any method; writes here take POST only, so a
# browser prefetching a link can never change data.


@bp.post("/seed/cache/set")
def seed_cache_set() -> ResponseReturnValue:
    """The seed's Cache worker, /set: cache a greeting for 60 s."""
    g.env.CACHE.set("greeting", "hello", ttl=60)  # cache for 60 seconds
    return {"success": True}


@bp.get("/seed/cache/get")
def seed_cache_get() -> ResponseReturnValue:
    """The seed's Cache worker, /get: the cached greeting, or null."""
    return {"value": g.env.CACHE.get("greeting")}


@bp.post("/seed/state/set")
def seed_state_set() -> ResponseReturnValue:
    """The seed's State worker, /set: store a greeting."""
    g.env.STATE.set("greeting", "hello world")
    return {"success": True}


@bp.get("/seed/state/get")
def seed_state_get() -> ResponseReturnValue:
    """The seed's State worker, /get: the stored greeting, or null."""
    return {"value": g.env.STATE.get("greeting")}


@bp.post("/seed/state/delete")
def seed_state_delete() -> ResponseReturnValue:
    """The seed's State worker, /delete: delete the greeting."""
    g.env.STATE.delete("greeting")
    return {"success": True}
