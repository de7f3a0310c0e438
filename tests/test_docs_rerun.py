"""The docs' samples run twice in a row against the same data.

A reader runs a page's samples, then runs them again (or against a database
an earlier sample filled): no sample may assume it runs on empty stores.
test_docs.py runs every page once; this runs the pages a newcomer copies
from, twice, in the same folder, so State (a SQLite file in ./instance)
keeps what the first run wrote.
"""

from __future__ import annotations

from typing import Any

import pytest

from .test_docs import DOCS, ROOT, docs_env, markdown_blocks, rst_blocks, run_blocks

__all__ = ["docs_env"]  # the fixture, imported so that pytest finds it here

#: The pages a newcomer copies from first. (api.rst's doctests run in the
#: docs_env app and assume empty stores; porting.rst's seed rate limiter
#: blocks for a second: run twice at once, its second run is rate limited.)
PAGES = ["quickstart.rst"]


@pytest.mark.parametrize("name", PAGES)
def test_page_runs_twice(name: str, docs_env: dict[str, Any]) -> None:
    blocks = rst_blocks((DOCS / name).read_text(encoding="utf-8"))
    start = dict(docs_env)
    for run in ("first", "second"):
        run_blocks(blocks, f"docs/{name} ({run} run)", dict(start))


def test_readme_runs_twice(docs_env: dict[str, Any]) -> None:
    blocks = markdown_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    start = dict(docs_env)
    for run in ("first", "second"):
        run_blocks(blocks, f"README.md ({run} run)", dict(start))
