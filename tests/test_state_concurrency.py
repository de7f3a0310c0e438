"""Atomic State counters under real concurrency: 4 processes x 4 threads
incrementing one key, on every database, end at the exact total."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

from flask import Flask, g

from flask_ploy import FlaskPloy

PROCESSES = 4
THREADS = 4
INCREMENTS = 40


def _worker(state_url: str, table: str, root: str, barrier: Any, errors: Any) -> None:
    app = Flask("concurrency", root_path=root, instance_path=root)
    app.config.update(
        TESTING=True,
        PLOY_BINDINGS={"state": {"STATE": "default"}},
        PLOY_STATE_URL=state_url,
        PLOY_STATE_TABLE=table,
    )
    FlaskPloy(app)
    failures: list[str] = []

    def run() -> None:
        try:
            with app.app_context():
                g.env.STATE.add("doc", "{}")
                for _ in range(INCREMENTS):
                    g.env.STATE.incr("counter")
                    g.env.STATE.update("doc", {"$inc": {"n": 1}})
        except BaseException as exc:
            failures.append(repr(exc))

    barrier.wait()
    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for failure in failures:
        errors.put(failure)


def test_processes_and_threads_never_lose_an_increment(
    state_app: Flask, state_url: str, state_table: str, tmp_path: Any
) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(state_url, state_table, str(tmp_path), barrier, errors))
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert reported == []  # no "database is locked", no deadlock, no lost update
    total = PROCESSES * THREADS * INCREMENTS
    with state_app.app_context():
        assert g.env.STATE.get("counter") == str(total)
        assert g.env.STATE.get("doc") == f'{{"n":{total}}}'
