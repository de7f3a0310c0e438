"""The core of the State and Cache contracts, run on each scale-out engine.

The full contract suites (``tests/test_state_contract.py``,
``tests/test_cache_contract.py``) run on the single servers; these are
their core operations, each checked for its exact answer: set, get, incr,
add, update, delete (and how many were deleted), list, through the public
API of a fresh example app.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import g

from .load import local_app


def state_core(config: dict[str, Any]) -> None:
    """set/get/incr/add/update/delete/list on ``g.env.STATE`` of an app with *config*."""
    with local_app(config) as app, app.app_context():
        s = g.env.STATE
        s.clear()
        assert s.get("k") is None
        s.set("k", "v1")
        s.set("k", "v2")
        assert s.get("k") == "v2"
        s.set("nul\x00é", "a\x00b ✓")
        assert s.get("nul\x00é") == "a\x00b ✓"

        assert s.incr("n") == 1
        assert s.incr("n", 41) == 42
        assert s.incr("n", -50) == -8
        assert s.incr("big", 2**63 - 2) == 2**63 - 2
        with pytest.raises(ValueError):
            s.incr("big", 2)
        assert s.get("big") == str(2**63 - 2)
        with pytest.raises(ValueError):
            s.incr("k")
        assert s.get("k") == "v2"

        assert s.add("lock", "me") is True
        assert s.add("lock", "you") is False
        assert s.get("lock") == "me"

        s.set("doc", json.dumps({"a": 1, "tags": []}))
        new = s.update("doc", {"$inc": {"a": 2}, "$push": {"tags": "x"}, "$set": {"b": "c"}})
        assert json.loads(new or "") == {"a": 3, "tags": ["x"], "b": "c"}
        assert s.update("missing", {"$set": {"a": 1}}) is None
        assert s.get("missing") is None

        assert s.delete("lock") is True
        assert s.delete("lock") is False
        assert s.get("lock") is None

        s.set_many({f"p:{i:03d}": str(i) for i in range(25)})
        assert s.get_many(["p:000", "p:024", "p:999"]) == {
            "p:000": "0",
            "p:024": "24",
            "p:999": None,
        }
        page = s.list("p:", limit=10)
        assert page.keys == [f"p:{i:03d}" for i in range(10)]
        keys: list[str] = []
        cursor = None
        while True:
            page = s.list("p:", limit=7, cursor=cursor)
            keys += page.keys
            cursor = page.cursor
            if cursor is None:
                break
        assert keys == [f"p:{i:03d}" for i in range(25)]
        assert dict(s.items("p:")) == {f"p:{i:03d}": str(i) for i in range(25)}

        assert s.delete_many(["p:000", "p:001", "p:999"]) == 2
        assert s.count() == 23 + 5  # p:002 to p:024; k, nul, n, big, doc
        assert s.clear() == 28
        assert s.count() == 0
        assert s.get("k") is None


def cache_core(config: dict[str, Any]) -> None:
    """set/get/incr/add/delete on ``g.env.CACHE`` of an app with *config*."""
    with local_app({**config, "PLOY_CACHE_ON_ERROR": "raise"}) as app, app.app_context():
        c = g.env.CACHE
        for key in ("k", "n", "lock", "t"):
            c.delete(key)
        assert c.get("k") is None
        c.set("k", "v1")
        c.set("k", "v2")
        assert c.get("k") == "v2"
        assert c.incr("n") == 1
        assert c.incr("n", 41) == 42
        assert c.add("lock", "me", ttl=60) is True
        assert c.add("lock", "you", ttl=60) is False
        assert c.get("lock") == "me"
        c.set_many({f"m{i}": str(i) for i in range(20)}, ttl=60)
        assert c.get_many([f"m{i}" for i in range(20)]) == {f"m{i}": str(i) for i in range(20)}
        assert c.delete("lock") is True
        assert c.delete("lock") is False
        c.set("t", "x", ttl=1)
        assert c.get("t") == "x"
