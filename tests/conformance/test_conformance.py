"""flask-ploy against Ploy's own emulator: the same operation sequences, compared.

Ploy's emulator (``ploy dev`` of ``@meetploy/cli`` 1.48.0, installed by
``tests/conformance/install.sh``) runs each seeded random sequence, and the
fixed edge-case sequences of :mod:`.harness`, once per test process; each
flask-ploy backend then replays them, op by op, and every outcome must equal
Ploy's or be explained by an allowed difference, which docs/porting.rst
lists with its reason. ``PLOY_CONFORMANCE_SEED`` picks other sequences.

Without the emulator (or Node.js >= 22.13, or the right to make network
namespaces) the tests skip; under ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g

from .. import conftest
from . import emulator as emu
from . import harness
from .harness import Op, Record

SEED = int(os.environ.get("PLOY_CONFORMANCE_SEED", "14"))
STATE_SEQUENCES, STATE_LENGTH = 150, 40
CACHE_SEQUENCES, CACHE_LENGTH = 50, 30
PORTING = Path(__file__).resolve().parents[2] / "docs" / "porting.rst"


def state_sequences() -> list[list[Op]]:
    rng = random.Random(SEED)
    seqs = [harness.state_sequence(rng, STATE_LENGTH) for _ in range(STATE_SEQUENCES)]
    return [*harness.state_edges(), *seqs]


def cache_sequences() -> list[list[Op]]:
    rng = random.Random(SEED + 1)
    seqs = [harness.cache_sequence(rng, CACHE_LENGTH, f"s{n}/") for n in range(CACHE_SEQUENCES)]
    return [*harness.cache_edges("edge/"), *seqs]


@pytest.fixture(scope="session")
def ploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emu.Emulator]:
    """Ploy's emulator with the conformance worker, for this test process."""
    emu.check_installed()
    with emu.start(tmp_path_factory.mktemp("ploy-emulator")) as emulator:
        yield emulator


_recorded: dict[str, tuple[list[list[Op]], list[list[Record]], float]] = {}


def recorded(ploy: emu.Emulator, binding: str) -> tuple[list[list[Op]], list[list[Record]], float]:
    """The sequences of *binding* and Ploy's records of them (run once per process)."""
    if binding not in _recorded:
        # Each State sequence starts from an empty store; Cache sequences,
        # which cannot empty Ploy's cache, use keys of their own.
        seqs = state_sequences() if binding == "STATE" else cache_sequences()
        started = time.monotonic()
        records = [harness.run_ploy(ploy.run, seq) for seq in seqs]
        _recorded[binding] = (seqs, records, time.monotonic() - started)
    return _recorded[binding]


def _check(
    request: pytest.FixtureRequest,
    app: Flask,
    ploy: emu.Emulator,
    binding: str,
    backend: str,
) -> None:
    seqs, records, ploy_took = recorded(ploy, binding)
    report = harness.Report()
    started = time.monotonic()
    with app.app_context():
        for n, (seq, recs) in enumerate(zip(seqs, records)):
            getattr(g.env, binding).clear()
            harness.replay(g.env, seq, recs, report, f"{binding} sequence {n} (seed {SEED})")
            if len(report.failures) >= 10:
                break
        getattr(g.env, binding).clear()
    took = time.monotonic() - started
    used = ", ".join(f"{k} {v}" for k, v in sorted(report.used.items()))
    figure = (
        f"conformance {binding} {backend}: {report.sequences} sequences, {report.ops} ops"
        f" in {took:.1f} s (Ploy's emulator: {ploy_took:.1f} s); allowed differences: {used}"
    )
    print(figure)
    request.node.user_properties.append(("ploy_figure", figure))
    assert not report.failures, (
        f"{len(report.failures)} unexplained differences from Ploy (seed {SEED}):\n\n"
        + "\n\n".join(report.failures)
    )
    kind = binding.title()
    missing = [
        r.id
        for r in harness.RULES
        if r.always and r.binding in (kind, "both") and r.id not in report.used
    ]
    assert not missing, f"allowed differences never seen, so no longer tested: {missing}"


@pytest.mark.parametrize("backend", conftest.CACHE_KINDS[:3])  # memory, sqlite, redis
def test_cache_conforms(
    request: pytest.FixtureRequest, make_app: Any, ploy: emu.Emulator, backend: str
) -> None:
    url = conftest._cache_url(backend, request)
    app = make_app(PLOY_CACHE_URL=url, PLOY_CACHE_KEY_PREFIX=f"c{uuid.uuid4().hex[:12]}")
    _check(request, app, ploy, "CACHE", backend)


@pytest.mark.parametrize("backend", conftest.STATE_KINDS)
def test_state_conforms(
    request: pytest.FixtureRequest,
    make_app: Any,
    tmp_path: Path,
    state_table: str,
    ploy: emu.Emulator,
    backend: str,
) -> None:
    url = conftest._state_url(backend, tmp_path)
    app = make_app(PLOY_STATE_URL=url, PLOY_STATE_TABLE=state_table + "_conf")
    _check(request, app, ploy, "STATE", backend)


def documented_rules() -> dict[str, str]:
    """``{rule id: binding}`` from the table of allowed differences in docs/porting.rst."""
    text = PORTING.read_text(encoding="utf-8")
    start = text.index(".. allowed-differences-start")
    end = text.index(".. allowed-differences-end")
    rows = re.findall(r"^   \* - ``([a-z-]+)``\n     - (\w+)", text[start:end], re.M)
    return dict(rows)


def test_allowed_differences_are_documented() -> None:
    """Each rule has a row in docs/porting.rst (id, binding, ...), and each row a rule."""
    documented = documented_rules()
    rules = {r.id: r.binding for r in harness.RULES}
    assert documented == rules
