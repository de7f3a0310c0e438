"""Cache on Redis with replicas: Sentinel and Cluster, a master killed under load.

The example app runs under gunicorn with ``PLOY_CACHE_ON_ERROR = "raise"``,
so a ``/cache/set`` answered 200 is a write Redis acknowledged, and a
failure is counted instead of read as a miss. Redis replicates
asynchronously: it does not promise that an acknowledged write survives a
failover, so lost writes are measured and bounded, not required to be 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import engines
from .core import cache_core
from .load import failover

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_sentinel_core_and_master_killed_under_load(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with engines.redis_sentinel_ha() as ha:
        config = {
            "PLOY_CACHE_URL": ha.url,
            "PLOY_CACHE_ON_ERROR": "raise",
            "PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
        }
        cache_core(config)
        old = ha.node(ha.master_port())
        report = failover(
            request,
            tmp_path,
            "redis sentinel (1 master, 2 replicas, 3 sentinels, down-after 1 s), master kill -9",
            config,
            "cache",
            old.kill,
            timeout=30,
        )
        assert ha.master_port() != old.port, "no failover happened"
        cache_core(config)  # the whole core again, on the new master
    assert report.failed_after_fault > 0, "the load never saw the outage: the test tested nothing"
    assert report.recovery < 10.0
    assert report.lost <= max(5, report.acked // 100)


def test_cluster_core_and_master_killed_under_load(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with engines.redis_cluster_ha() as ha:
        config = {
            "PLOY_CACHE_URL": ha.url,
            "PLOY_CACHE_ON_ERROR": "raise",
            "PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
        }
        cache_core(config)
        masters = [port for port, role in ha.roles().items() if role == "master"]
        assert len(masters) == 3
        victim = next(n for n in ha.nodes if n.port == masters[0])
        report = failover(
            request,
            tmp_path,
            "redis cluster (3 masters + 3 replicas, node-timeout 2 s), a master kill -9",
            config,
            "cache",
            victim.kill,
            timeout=40,
        )
        assert sorted(ha.roles().values()).count("master") == 3, "no replica took over"
        cache_core(config)
    assert report.failed_after_fault > 0, "the load never saw the outage: the test tested nothing"
    assert report.recovery < 15.0
    assert report.lost <= max(5, report.acked // 100)
