"""flask-ploy: Ploy's Cache and State key-value bindings for Flask.

.. code-block:: python

    from flask import Flask, g
    from flask_ploy import FlaskPloy

    app = Flask(__name__)
    ploy = FlaskPloy(app)  # reads ploy.yaml beside the app

    @app.get("/")
    def index():
        g.env.CACHE.set("greeting", "hello", ttl=60)
        return g.env.STATE.get("user:123") or ""
"""

from __future__ import annotations

from .cache import Cache
from .env import Env
from .errors import (
    CacheUnavailable,
    PloyConfigError,
    PloyError,
    StateInDoubt,
    StateUnavailable,
    UnknownBinding,
)
from .extension import FlaskPloy
from .protocols import CacheBinding, StateBinding
from .state import Entry, EntryList, KeyInfo, ListResult, State, Transaction, ValueWithMetadata

__all__ = [
    "Cache",
    "CacheBinding",
    "CacheUnavailable",
    "Entry",
    "EntryList",
    "Env",
    "FlaskPloy",
    "KeyInfo",
    "ListResult",
    "PloyConfigError",
    "PloyError",
    "State",
    "StateBinding",
    "StateInDoubt",
    "StateUnavailable",
    "Transaction",
    "UnknownBinding",
    "ValueWithMetadata",
]

__version__ = "0.2.0.dev0"
