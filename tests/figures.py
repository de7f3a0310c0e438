"""A pytest plugin that prints the figures the reliability tests measured.

The model, fault, hostile and isolation tests attach each figure they
measure (examples run, requests failed, writes lost...) to their report as
a ``ploy_figure`` user property, which survives pytest-xdist. This plugin
prints them, in test order, at the end of the run::

    pytest -p tests.figures -n auto tests/test_model.py tests/test_faults.py

or for every run, with ``pytest_plugins = ["tests.figures"]`` in conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest

_FIGURES: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == "ploy_figure":
            _FIGURES.append((report.nodeid, str(value)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("flask-ploy reliability figures")
    for nodeid, text in sorted(_FIGURES):
        terminalreporter.write_line(f"{text}    [{nodeid.split('::', 1)[-1]}]")
