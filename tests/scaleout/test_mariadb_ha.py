"""State on MariaDB Galera (3 nodes) and Spider (a front and 2 shards).

Galera replicates every commit to all nodes before it returns (virtually
synchronous), so no acknowledged write may be lost when a node dies: the
test requires 0. Each engine's phases run in one test, on one cluster, so
parallel workers never start two.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import g

from flask_ploy import StateUnavailable

from ..test_faults import figure
from . import engines
from .core import state_core
from .load import failover, local_app

pytestmark = [pytest.mark.slow]


def _config(url: str, **extra: Any) -> dict[str, Any]:
    return {"PLOY_STATE_URL": url, "PLOY_CACHE_URL": "memory://", **extra}


def _counters_exact_across_nodes(cluster: engines.Galera) -> int:
    """One app per node, all incrementing one counter: certification
    conflicts (1213) are retried, and the total is exact."""
    per_thread = 60
    errors: list[BaseException] = []

    def work(node: engines.MariaNode) -> None:
        try:
            with local_app(_config(cluster.url(node))) as app:
                for _ in range(per_thread):
                    with app.app_context():
                        g.env.STATE.incr("shared-counter")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in cluster.nodes for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:3]
    with local_app(_config(cluster.url())) as app, app.app_context():
        total = int(g.env.STATE.get("shared-counter") or 0)
    assert total == per_thread * len(threads)
    return total


def _stale_reads(cluster: engines.Galera, sync_wait: bool, rounds: int = 1000) -> int:
    """Write on one node, read at once on another: how often the read is old."""
    writer, reader = cluster.nodes[0], cluster.nodes[1]
    query = {"wsrep_sync_wait": "1"} if sync_wait else {}
    stale = 0
    with (
        local_app(_config(cluster.url(writer))) as wapp,
        local_app(_config(cluster.url(reader, **query))) as rapp,
        wapp.app_context(),
    ):
        wstate = g.env.STATE
        with rapp.app_context():
            rstate = g.env.STATE
            for i in range(rounds):
                wstate.set("fresh", str(i))
                stale += rstate.get("fresh") != str(i)
    return stale


def _isolated_node_is_skipped(
    cluster: engines.Galera, caplog: pytest.LogCaptureFixture
) -> tuple[float, float]:
    """A node cut off from the cluster refuses queries with 1047: pooled
    connections to it are thrown away (no "Exception during reset" flood),
    and a multi-host URL moves on to a node that is ready."""
    node = cluster.nodes[0]
    with (
        local_app(_config(cluster.url())) as multi,
        local_app(_config(node.url)) as single,
    ):
        for app in (multi, single):  # a pooled connection to node 0 in each
            with app.app_context():
                g.env.STATE.set("before", "isolation")
        node.sql("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'")
        try:
            engines.wait_until(
                lambda: node.status("wsrep_ready") == "OFF", 30, "the node stayed ready"
            )
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                start = time.monotonic()
                with multi.app_context():
                    g.env.STATE.set("during", "isolation")  # moves to node 1
                    assert g.env.STATE.get("during") == "isolation"
                moved = time.monotonic() - start
                start = time.monotonic()
                for _ in range(20):
                    with single.app_context(), pytest.raises(StateUnavailable, match="1047"):
                        g.env.STATE.get("before")
                refused = (time.monotonic() - start) / 20
            flood = [r for r in caplog.records if "reset" in r.getMessage().lower()]
            assert flood == [], flood[:3]
        finally:
            node.sql("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'")
        engines.wait_until(lambda: node.status("wsrep_ready") == "ON", 60, "no rejoin")
        engines.wait_until(lambda: cluster.size(node) == len(cluster.nodes), 60, "no rejoin")
        with single.app_context():
            assert g.env.STATE.get("during") == "isolation"  # back, and caught up
    return moved, refused


@pytest.mark.timeout(420)
def test_galera(
    tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    with engines.galera_cluster(3) as cluster:
        up = time.monotonic() - started
        config = _config(cluster.url())
        state_core(config)
        for node in cluster.nodes:  # the core on each node alone
            state_core(_config(cluster.url(node)))

        total = _counters_exact_across_nodes(cluster)
        figure(request, f"galera: {total} incr from 6 threads on 3 nodes, counter exact")

        stale = _stale_reads(cluster, sync_wait=False)
        fresh = _stale_reads(cluster, sync_wait=True)
        figure(
            request,
            f"galera: write on node 0, read at once on node 1: {stale}/1000 reads stale;"
            f" with wsrep_sync_wait=1, {fresh}/1000",
        )
        assert fresh == 0

        moved, refused = _isolated_node_is_skipped(cluster, caplog)
        figure(
            request,
            f"galera: node isolated (1047): multi-host URL on the next node in {moved:.2f} s;"
            f" single-host URL refused in {refused * 1000:.0f} ms per operation, no log flood",
        )

        victim = cluster.nodes[0]  # the first host of the URL: where every write goes
        report = failover(
            request,
            tmp_path,
            "galera 3 nodes, multi-host URL: the written node kill -9",
            config,
            "state",
            victim.crash,
            timeout=60,
            readback=_config(cluster.url(*cluster.nodes[1:])),
        )
        assert cluster.size(cluster.nodes[1]) == 2
    figure(request, f"galera: 3 nodes up in {up:.1f} s (rsync SST)")
    assert report.lost == 0, "Galera lost an acknowledged write"
    assert report.recovery < 20.0


@pytest.mark.timeout(240)
def test_spider(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    with engines.spider_cluster() as spider:
        up = time.monotonic() - started
        config = _config(spider.url)
        state_core(config)  # delete()/delete_many()/clear() counts included

        # Keys spread over both shards.
        with local_app(config) as app, app.app_context():
            g.env.STATE.set_many({f"spread:{i}": "x" for i in range(100)})
        counts = [s.sql("SELECT COUNT(*) FROM ploy_state", db="ploy")[0][0] for s in spider.shards]
        assert sum(counts) == 100 and min(counts) > 20, counts
        with local_app(config) as app, app.app_context():
            assert g.env.STATE.delete_many([f"spread:{i}" for i in range(50)]) == 50
            assert g.env.STATE.clear() == 50
            # Found by the table's engine; a plain DELETE would count 0 here.
            assert g.env.STATE._store.dialect.returning == " RETURNING 1"

        shard = spider.shards[1]

        def fault() -> None:
            shard.crash()
            time.sleep(2.0)
            shard.start()

        report = failover(
            request,
            tmp_path,
            "spider front + 2 shards: a shard kill -9, restarted 2 s later",
            config,
            "state",
            fault,
            timeout=60,
        )
        state_core(config)
    figure(request, f"spider: front and 2 shards up in {up:.1f} s")
    # Spider retries a refused shard for a while before it fails the query: a
    # request for the dead shard's keys either failed or waited.
    assert report.failed_after_fault > 0 or report.slowest > 1.0, "the load never saw the outage"
    assert report.lost == 0
    assert report.recovery < 20.0
