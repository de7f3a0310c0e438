"""Load from the example app under gunicorn through a failover, and what it cost.

:func:`serve` runs ``example_app:create_app(config)`` under gunicorn with
two workers (the config travels as JSON in the environment, so a test can
set ``PLOY_CACHE_ON_ERROR``, engine options...). :class:`Load` sends
requests from several threads until stopped: numbered writes (``set``),
and counters (``incr``) whose returned values are the acknowledged counts.
:meth:`Load.report` turns the outcomes into the figures the issue asks for:

- failed operations (any answer but 200, or no answer), during the outage;
- time to recover: from the fault to the first success after the last
  failure, without restarting the app;
- acknowledged writes lost: a key the app answered 200 for that is not
  there afterwards, or a counter below a value it returned.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import g

from .. import servers
from ..test_faults import figure

WRAPPER = """\
import json, os
from example_app import create_app

def make():
    return create_app(json.loads(os.environ["SCALEOUT_APP_CONFIG"]))
"""


@contextlib.contextmanager
def serve(tmp_path: Path, config: dict[str, Any], workers: int = 2) -> Iterator[str]:
    """The example app with *config* under gunicorn; yields its base URL."""
    (tmp_path / "scaleapp.py").write_text(WRAPPER)
    # The config argument wins over FLASK_PLOY_* variables; none are set anyway.
    env = {"SCALEOUT_APP_CONFIG": json.dumps(config)}
    with servers.gunicorn(tmp_path, env, "-w", str(workers), app="scaleapp:make()") as (base, _):
        yield base


@contextlib.contextmanager
def local_app(config: dict[str, Any]) -> Iterator[Any]:
    """The same app in this process (to read back what the load wrote); its
    connections are closed at the end of the block."""
    from example_app import create_app, ploy

    app = create_app(dict(config))
    try:
        yield app
    finally:
        ploy.app_bindings(app).close()


@dataclass
class Op:
    start: float
    end: float
    kind: str
    key: str
    status: int
    answer: Any

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Report:
    label: str
    total: int
    failed: int
    failed_after_fault: int
    recovery: float
    slowest_failure: float
    slowest: float
    lost: int
    acked: int
    statuses: dict[int, int]

    def text(self) -> str:
        codes = ", ".join(
            f"{n}x{'no answer' if s < 0 else s}" for s, n in sorted(self.statuses.items())
        )
        return (
            f"{self.label}: {self.total} requests, {self.failed} failed"
            f"{f' ({codes})' if codes else ''}, back {self.recovery:.2f} s after the fault"
            f" without an app restart, {self.acked} acknowledged writes, {self.lost} lost"
            + f"; slowest request after the fault {self.slowest:.2f} s"
        )


@dataclass
class Load:
    """Writes through the app from *threads* threads until :meth:`stop`."""

    base: str
    kind: str  # "state" or "cache"
    threads: int = 4
    ops: list[Op] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for t in range(self.threads):
            th = threading.Thread(target=self._loop, args=(t,), daemon=True)
            th.start()
            self._workers.append(th)
        return self

    def _request(self, t: int, i: int) -> tuple[str, str, dict[str, str] | None]:
        if self.kind == "state":
            if i % 4 == 0:
                return "incr", f"/counters/t{t}", {}
            return "set", "/state/set", {"key": f"t{t}:{i}", "value": f"v{t}.{i}"}
        return "set", "/cache/set", {"key": f"t{t}:{i}", "value": f"v{t}.{i}"}

    def _loop(self, t: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            kind, path, data = self._request(t, i)
            key = data["key"] if data and "key" in data else f"counter:t{t}"
            start = time.monotonic()
            try:
                status, answer = servers.http_json(self.base, path, data, timeout=30)
            except Exception as exc:  # refused, reset or timed out: a failure
                status, answer = -1, repr(exc)
            self.ops.append(Op(start, time.monotonic(), kind, key, status, answer))
            if status != 200:
                time.sleep(0.02)  # a client backing off a little

    def stop(self) -> None:
        self._stop.set()
        for th in self._workers:
            th.join(60)
        assert not any(th.is_alive() for th in self._workers), "a request hung"

    def wait_recovered(self, since: float, steady: float = 1.0, timeout: float = 60.0) -> bool:
        """Wait until every request has succeeded for *steady* seconds after *since*."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = time.monotonic()
            recent = [o for o in list(self.ops) if o.start >= since]
            fails = [o.start for o in recent if not o.ok]
            good_since = max(fails, default=since)
            oks = [o for o in recent if o.ok and o.start > good_since]
            if oks and now - good_since >= steady and now - oks[0].start >= steady:
                return True
        return False

    def acked_sets(self) -> dict[str, str]:
        return {
            o.key: f"v{o.key[1:].replace(':', '.')}" for o in self.ops if o.ok and o.kind == "set"
        }

    def acked_counters(self) -> dict[str, tuple[int, int]]:
        """``{counter key: (highest value returned, attempts)}``."""
        out: dict[str, tuple[int, int]] = {}
        for o in self.ops:
            if o.kind != "incr":
                continue
            high, tries = out.get(o.key, (0, 0))
            if o.ok:
                high = max(high, int(o.answer["value"]))
            out[o.key] = (high, tries + 1)
        return out

    def report(self, label: str, fault_at: float, config: dict[str, Any]) -> Report:
        """Count failures and recovery, and read back every acknowledged write."""
        ops = list(self.ops)
        fails = [o for o in ops if not o.ok]
        after = [o for o in fails if o.start >= fault_at]
        # Back: the first success of a request sent after the last failure (or
        # after the fault, when nothing failed but requests stalled).
        since = max((o.start for o in after), default=fault_at)
        back = min((o.end for o in ops if o.ok and o.start >= since), default=None)
        recovery = (back or time.monotonic()) - fault_at
        sets = self.acked_sets()
        counters = self.acked_counters()
        lost = 0
        with local_app(config) as app, app.app_context():
            binding = g.env.STATE if self.kind == "state" else g.env.CACHE
            found = binding.get_many(list(sets))
            lost += sum(found.get(k) != v for k, v in sets.items())
            for key, (high, tries) in counters.items():
                value = int(binding.get(key) or 0)
                lost += value < high  # an acknowledged count went missing
                assert value <= tries, f"{key} counted {value} of {tries} attempts"
        statuses: dict[int, int] = {}
        for o in fails:
            statuses[o.status] = statuses.get(o.status, 0) + 1
        return Report(
            label,
            len(ops),
            len(fails),
            len(after),
            recovery,
            max((o.end - o.start for o in fails), default=0.0),
            max((o.end - o.start for o in ops if o.end >= fault_at), default=0.0),
            lost,
            len(sets) + sum(1 for o in ops if o.ok and o.kind == "incr"),
            statuses,
        )


def failover(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    label: str,
    config: dict[str, Any],
    kind: str,
    fault: Any,
    *,
    before: float = 1.0,
    timeout: float = 60.0,
    readback: dict[str, Any] | None = None,
) -> Report:
    """Serve the example app with *config*, load it, call *fault()*, wait for
    recovery, and report (printed with ``figure``).

    :param readback: The config to read back with, if not *config* (e.g. a
        URL that leaves the dead node out).
    """
    with serve(tmp_path, config) as base:
        load = Load(base, kind).start()
        try:
            time.sleep(before)
            assert any(o.ok for o in load.ops), (
                f"no request succeeded before the fault: {load.ops[:3]}"
            )
            fault_at = time.monotonic()
            fault()
            recovered = load.wait_recovered(fault_at, timeout=timeout)
        finally:
            load.stop()
    report = load.report(label, fault_at, readback or config)
    figure(request, report.text())
    assert recovered, (
        f"{label}: requests still failing {timeout:g} s after the fault: {report.text()}"
    )
    return report
