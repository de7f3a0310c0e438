"""State on replicated PostgreSQL: a synchronous standby behind a libpq
multi-host URL, fencing of an old primary, and Patroni with etcd.

Synchronous replication promises that a commit the client saw is on the
standby too, so no acknowledged write may be lost on failover: these tests
require 0.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import g

from flask_ploy import StateInDoubt, StateUnavailable

from ..test_faults import figure
from . import engines
from .core import state_core
from .load import failover, local_app

pytestmark = [pytest.mark.slow]


def _config(url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"PLOY_STATE_URL": url, "PLOY_CACHE_URL": "memory://", **extra}


@pytest.mark.timeout(240)
def test_sync_standby_promoted_under_load_loses_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with engines.postgres_sync_pair() as pair:
        config = _config(pair.url(), tmp_path)
        state_core(config)
        times: dict[str, float] = {}

        def fault() -> None:
            times["crash"] = time.monotonic()
            pair.primary.crash()  # kill -9 the postmaster and every backend
            time.sleep(1.0)  # what a failover manager takes to decide, at least
            times["promote"] = time.monotonic()
            pair.standby.promote()

        report = failover(
            request,
            tmp_path,
            "postgresql primary + synchronous standby, multi-host URL: primary kill -9,"
            " standby promoted 1 s later",
            config,
            "state",
            fault,
            timeout=30,
        )
        state_core(config)  # the core again, on the promoted standby
    after_promotion = times["crash"] + report.recovery - times["promote"]
    figure(
        request,
        f"postgresql synchronous standby: writes back {after_promotion:.2f} s after"
        " pg_ctl promote was run",
    )
    assert report.failed_after_fault > 0, "the load never saw the outage"
    assert report.lost == 0, "synchronous replication lost an acknowledged write"
    assert after_promotion < 3.0


@pytest.mark.timeout(180)
def test_old_primary_back_after_failover_is_bounded(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The old primary returns as a primary (nobody fenced it). A multi-host
    URL that lists it first connects to it again, and its commits wait for a
    synchronous standby that is gone: without a read timeout, forever."""
    with engines.postgres_sync_pair() as pair:
        pair.primary.crash()
        pair.standby.promote()
        pair.primary.start()  # back, still configured to wait for a standby
        assert pair.primary.sql("SELECT pg_is_in_recovery()") == [(False,)]

        read_timeout = 2.0
        config = _config(
            pair.url(pair.primary, pair.standby),
            tmp_path,
            PLOY_STATE_ENGINE_OPTIONS={"connect_args": {"read_timeout": read_timeout}},
        )
        outcome: dict[str, Any] = {}
        with local_app(config) as app:

            def write(key: str, op: str) -> None:
                start = time.monotonic()
                try:
                    with app.app_context():
                        if op == "set":
                            g.env.STATE.set(key, "v")
                        else:
                            g.env.STATE.incr(key)
                    outcome[key] = ("ok", time.monotonic() - start)
                except Exception as exc:
                    outcome[key] = (exc, time.monotonic() - start)

            threads = [
                threading.Thread(target=write, args=("fenced-set", "set"), daemon=True),
                threading.Thread(target=write, args=("fenced-incr", "incr"), daemon=True),
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join(4 * read_timeout + 10)
            assert not any(th.is_alive() for th in threads), "a write hung on the old primary"

        set_exc, set_took = outcome["fenced-set"]
        incr_exc, incr_took = outcome["fenced-incr"]
        # set is idempotent: it ran once more on a new connection (the same old
        # primary, first in the URL), timed out again, then gave up.
        assert isinstance(set_exc, StateUnavailable), set_exc
        assert "read_timeout" in str(set_exc)
        # incr is not: the commit may stand on the old primary, so it is in doubt.
        assert isinstance(incr_exc, StateInDoubt), incr_exc
        assert set_took < 2 * read_timeout + 6 and incr_took < read_timeout + 4

        # Fenced: with the old primary out of the URL, writes go on at once.
        fenced = _config(pair.url(pair.standby), tmp_path)
        with local_app(fenced) as app, app.app_context():
            g.env.STATE.set("after", "fencing")
            assert g.env.STATE.get("after") == "fencing"

        # Without the read timeout, the same write never returns.
        unbounded = _config(
            pair.url(pair.primary),
            tmp_path,
            PLOY_STATE_ENGINE_OPTIONS={"connect_args": {"read_timeout": None}},
        )
        done = threading.Event()
        with local_app(unbounded) as app:

            def forever() -> None:
                with contextlib.suppress(Exception), app.app_context():
                    g.env.STATE.set("never", "v")
                done.set()

            threading.Thread(target=forever, daemon=True).start()
            assert not done.wait(3 * read_timeout), "the commit returned without a standby?"
            pair.primary.crash()  # set the blocked thread free
            assert done.wait(10)
    figure(
        request,
        f"old postgresql primary back after failover, read_timeout {read_timeout:g} s:"
        f" set gave up after {set_took:.1f} s (StateUnavailable), incr after"
        f" {incr_took:.1f} s (StateInDoubt); without the timeout, still blocked after"
        f" {3 * read_timeout:g} s",
    )


@pytest.mark.timeout(300)
def test_patroni_leader_crash_under_load_loses_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with engines.patroni_pair() as cluster:
        config = _config(cluster.url, tmp_path)
        state_core(config)
        leader = cluster.leader()
        assert leader is not None
        report = failover(
            request,
            tmp_path,
            "patroni + etcd, 2 postgresql in synchronous mode (ttl 20 s): leader machine"
            " crash (patroni and postgres kill -9)",
            config,
            "state",
            leader.crash,
            timeout=60,
        )
        new = cluster.leader()
        assert new is not None and new.name != leader.name
        state_core(config)
    assert report.failed_after_fault > 0, "the load never saw the outage"
    assert report.lost == 0, "synchronous mode lost an acknowledged write"
    assert report.recovery < 45.0
