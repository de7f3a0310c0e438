"""Sphinx configuration for flask-ploy."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import flask_ploy  # noqa: E402

project = "flask-ploy"
copyright = "2026, the flask-ploy developers"  # noqa: A001
version = release = flask_ploy.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "pallets_sphinx_themes",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
# No intersphinx: the docs build offline (CI has no network).
nitpicky = False

html_theme = "flask"
html_context = {"project_links": []}
html_title = f"flask-ploy Documentation ({version})"
html_show_sourcelink = False
html_static_path: list[str] = []
