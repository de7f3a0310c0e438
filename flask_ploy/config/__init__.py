"""Loading and validating ``ploy.yaml`` and the ``PLOY_*`` settings.

:func:`load_bindings` reads the bindings of an app, from the file named by
``PLOY_CONFIG`` or from the inline ``PLOY_BINDINGS`` mapping, and checks them
by the Ploy platform's rules (:mod:`.bindings`, reading the file with
:mod:`.yamlfile`). :func:`read_settings` checks the ``PLOY_*`` settings
(:mod:`.settings`). Every problem raises :class:`~flask_ploy.PloyConfigError`
with the source, the offending key and what is wrong.
"""

from __future__ import annotations

from .bindings import (
    KINDS,
    OTHER_BINDING_KINDS,
    Binding,
    Bindings,
    config_path,
    load_bindings,
    validate,
)
from .settings import DEFAULTS, Settings, read_settings, settings_warnings
from .yamlfile import MAX_CHARS, MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, parse_yaml, read_file, short

__all__ = [
    "DEFAULTS",
    "KINDS",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "OTHER_BINDING_KINDS",
    "Binding",
    "Bindings",
    "Settings",
    "config_path",
    "load_bindings",
    "parse_yaml",
    "read_file",
    "read_settings",
    "settings_warnings",
    "short",
    "validate",
]
