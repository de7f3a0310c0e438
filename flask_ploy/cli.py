"""The ``flask ploy`` commands."""

from __future__ import annotations

from flask.cli import AppGroup

ploy_cli = AppGroup("ploy", help="Inspect and manage the Ploy bindings of this app.")
