"""The bank: 4 processes x 4 threads move money at random among 20 accounts,
on every database, for ``PLOY_SOAK_SECONDS`` (default 3, the bounded form
CI runs; the ``soak`` marker; ``PLOY_SOAK_SECONDS=10`` for the 10-second
version).

With ``STATE.transact``: the total is conserved exactly, no balance ever
goes negative, no error reaches a caller, and an auditor that sums every
account in one read-only transaction, over and over while the transfers
run, always finds the exact total.

The same transfers written with plain ``get`` and ``set`` (read both
balances, write both) lose and create money under the same load. That is
measured and reported (the drift of the total, the negative balances), not
asserted: how much depends on timing.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from flask import Flask, g

from flask_ploy import FlaskPloy, Transaction

from .test_faults import figure

SOAK_SECONDS = float(os.environ.get("PLOY_SOAK_SECONDS", "3"))
PROCESSES = 4
THREADS = 4
ACCOUNTS = [f"acct:{i:02d}" for i in range(20)]
START = 200  # each account's opening balance: transfers of up to 100 often fail
TOTAL = START * len(ACCOUNTS)

pytestmark = [pytest.mark.soak, pytest.mark.slow]


def _transfer(s: Any, src: str, dst: str, amount: int, runs: Counter[str]) -> bool:
    def fn(tx: Transaction) -> bool:
        runs["runs"] += 1
        have = int(tx.get(src))
        if have < amount:
            return False
        tx.set(src, str(have - amount))
        tx.set(dst, str(int(tx.get(dst)) + amount))
        return True

    return s.transact(fn)  # type: ignore[no-any-return]


def _plain_transfer(s: Any, src: str, dst: str, amount: int, runs: Counter[str]) -> bool:
    runs["runs"] += 1
    have = int(s.get(src))
    if have < amount:
        return False
    s.set(src, str(have - amount))
    s.set(dst, str(int(s.get(dst)) + amount))
    return True


def _audit(s: Any) -> tuple[int, int]:
    """The total and the lowest balance, read in one transaction."""

    def fn(tx: Transaction) -> tuple[int, int]:
        balances = [int(v) for v in tx.get_many(ACCOUNTS).values()]  # type: ignore[arg-type]
        return sum(balances), min(balances)

    return s.transact(fn)  # type: ignore[no-any-return]


def _process(url: str, table: str, root: str, mode: str, n: int, barrier: Any, out: Any) -> None:
    app = Flask("bank", root_path=root, instance_path=root)
    app.config.update(
        TESTING=True,
        PLOY_BINDINGS={"state": {"STATE": "default"}},
        PLOY_STATE_URL=url,
        PLOY_STATE_TABLE=table,
    )
    FlaskPloy(app)
    move = _transfer if mode == "transact" else _plain_transfer
    totals: Counter[str] = Counter()
    errors: list[str] = []
    times: list[float] = []  # each teller's slowest call, in seconds
    lock = threading.Lock()
    stop = time.monotonic()  # set below, once every process is ready

    def teller(seed: int) -> None:
        rnd = random.Random(seed)
        mine: Counter[str] = Counter()
        slowest = 0.0
        with app.app_context():
            s = g.env.STATE
            while time.monotonic() < stop:
                src, dst = rnd.sample(ACCOUNTS, 2)
                mine["calls"] += 1
                began = time.monotonic()
                try:
                    moved = move(s, src, dst, rnd.randint(1, 100), mine)
                except Exception as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                mine["moved" if moved else "declined"] += 1
                slowest = max(slowest, time.monotonic() - began)
        with lock:
            totals.update(mine)
            times.append(slowest)

    def auditor() -> None:  # one per run, in the first process
        with app.app_context():
            s = g.env.STATE
            while time.monotonic() < stop:
                total, lowest = _audit(s)
                with lock:
                    totals["audits"] += 1
                    totals["audit mismatches"] += total != TOTAL
                    totals["negative seen"] += lowest < 0
                time.sleep(0.05)

    barrier.wait()
    stop = time.monotonic() + SOAK_SECONDS
    threads = [threading.Thread(target=teller, args=(n * 100 + t,)) for t in range(THREADS)]
    if mode == "transact" and n == 0:
        threads.append(threading.Thread(target=auditor))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((dict(totals), errors, max(times)))


def _bank(state_app: Flask, url: str, table: str, root: str, mode: str) -> dict[str, Any]:
    with state_app.app_context():
        g.env.STATE.clear()
        g.env.STATE.set_many(dict.fromkeys(ACCOUNTS, str(START)))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_process, args=(url, table, root, mode, n, barrier, out))
        for n in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=SOAK_SECONDS + 120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    stats: Counter[str] = Counter()
    errors: list[str] = []
    slowest = 0.0
    for counts, errs, slow in results:
        stats.update(counts)
        errors += errs
        slowest = max(slowest, slow)
    with state_app.app_context():
        balances = [int(v) for v in g.env.STATE.get_many(ACCOUNTS).values()]  # type: ignore[arg-type]
    return {
        **stats,
        "errors": errors,
        "slowest": slowest,
        "total": sum(balances),
        "lowest": min(balances),
        "negative": sum(b < 0 for b in balances),
    }


def test_transfers_in_transactions_conserve_money(
    state_app: Flask, state_url: str, state_table: str, tmp_path: Any, request: Any
) -> None:
    kind = state_url.split(":", 1)[0].split("+")[0]
    root = str(tmp_path)
    plain = _bank(state_app, state_url, state_table, root, "plain")
    tx = _bank(state_app, state_url, state_table, root, "transact")
    rate = tx.get("moved", 0) / SOAK_SECONDS
    retries = tx.get("runs", 0) - tx.get("calls", 0)
    figure(
        request,
        f"bank {kind}: {PROCESSES}x{THREADS} for {SOAK_SECONDS:g} s with transact:"
        f" {tx.get('moved', 0)} transfers ({rate:.0f}/s), {tx.get('declined', 0)} declined,"
        f" {retries} retries ({retries / max(1, tx.get('calls', 0)):.1%}), total"
        f" {tx['total']} of {TOTAL}, lowest balance {tx['lowest']}, slowest call"
        f" {tx['slowest'] * 1000:.0f} ms, {tx.get('audits', 0)} audits"
        f" ({tx.get('audit mismatches', 0)} off), {len(tx['errors'])} errors",
    )
    figure(
        request,
        f"bank {kind}: the same with plain get/set: {plain.get('moved', 0)} transfers,"
        f" total {plain['total']} of {TOTAL} ({plain['total'] - TOTAL:+d}),"
        f" {plain['negative']} negative balances (lowest {plain['lowest']}),"
        f" {len(plain['errors'])} errors",
    )
    assert tx["errors"] == []
    assert tx["total"] == TOTAL
    assert tx["lowest"] >= 0
    assert tx.get("audits", 0) > 0
    assert tx.get("audit mismatches", 0) == 0
    assert tx.get("negative seen", 0) == 0
    assert tx.get("moved", 0) >= PROCESSES * THREADS  # every teller got through
    assert tx["moved"] + tx.get("declined", 0) == tx["calls"]
    assert plain.get("moved", 0) > 0
