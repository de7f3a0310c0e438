"""Tables made by flask-ploy 0.1 (``resource, key, value``) get the
``metadata`` and ``expires_at`` columns and the expiry index on first use,
with every row kept, while four processes race to upgrade them, on SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from .conftest import worker_id

ROWS = 300

#: The state table exactly as flask-ploy 0.1 made it.
OLD_KEY = (
    sa.Text()
    .with_variant(postgresql.BYTEA(), "postgresql")
    .with_variant(mysql.VARBINARY(512), "mysql", "mariadb")
)
OLD_VALUE = (
    sa.Text()
    .with_variant(postgresql.BYTEA(), "postgresql")
    .with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
)

CHILD = r"""
import json, sys, time
from flask import Flask, g
from flask_ploy import FlaskPloy

url, table, start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
app = Flask("upgrade")
app.config.update(PLOY_BINDINGS={"state": {"STATE": "default"}}, PLOY_STATE_URL=url,
                  PLOY_STATE_TABLE=table)
FlaskPloy(app)
time.sleep(max(0.0, start - time.time()))  # all four begin at once
with app.app_context():
    s = g.env.STATE
    s.set(f"new{n}", "v", metadata={"by": n}, ttl=3600)
    out = {"old": s.get("old0000"), "meta": s.get_with_metadata(f"new{n}"), "count": s.count()}
print(json.dumps(out))
"""


def _old_table(engine: sa.Engine, name: str) -> None:
    md = sa.MetaData()
    table = sa.Table(
        name,
        md,
        sa.Column("resource", sa.String(64), primary_key=True),
        sa.Column("key", OLD_KEY, primary_key=True),
        sa.Column("value", OLD_VALUE, nullable=False),
        sqlite_with_rowid=False,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
    )
    table.drop(engine, checkfirst=True)
    table.create(engine)
    binary = engine.dialect.name != "sqlite"
    enc: Any = (lambda s: s.encode()) if binary else (lambda s: s)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"resource": "default", "key": enc(f"old{i:04d}"), "value": enc(str(i))}
                for i in range(ROWS)
            ],
        )


def test_four_processes_upgrade_an_old_table_without_losing_a_row(
    state_url: str, tmp_path: Path
) -> None:
    table = f"ploy_up_{worker_id()}"
    engine = sa.create_engine(state_url)
    try:
        _old_table(engine, table)
        start = time.time() + 3.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, state_url, table, str(start), str(n)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(4)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_out, err) in zip(procs, outs):
            assert p.returncode == 0, err
        results = [json.loads(out) for out, _ in outs]
        for n, r in enumerate(results):
            assert r["old"] == "0"
            assert r["meta"] == ["v", {"by": n}]
            assert ROWS + 1 <= r["count"] <= ROWS + 4
        inspector = sa.inspect(engine)
        columns = {c["name"] for c in inspector.get_columns(table)}
        assert {"resource", "key", "value", "metadata", "expires_at"} <= columns
        assert [i for i in inspector.get_indexes(table) if "expiry" in i["name"]]
        with engine.connect() as conn:
            total = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()
            untouched = conn.execute(
                sa.text(
                    f"SELECT COUNT(*) FROM {table} WHERE metadata IS NULL AND expires_at IS NULL"
                )
            ).scalar()
        assert (total, untouched) == (ROWS + 4, ROWS)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def test_an_upgrade_blocked_by_a_long_transaction_gives_up_in_the_busy_timeout(
    state_url: str, make_app: Any
) -> None:
    """A long transaction holds the old table (a 0.1 process, a report): the
    upgrade waits PLOY_STATE_BUSY_TIMEOUT, as any operation, then says what
    blocks it and what to run (it waited for the transaction, 29.5 s with a
    3 s timeout, and meanwhile blocked every query queued behind it)."""
    from flask import g

    from flask_ploy import StateUnavailable

    table = f"ploy_upb_{worker_id()}"
    engine = sa.create_engine(state_url)
    try:
        _old_table(engine, table)
        holder = engine.connect()
        holder.begin()
        holder.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()
        if engine.dialect.name == "sqlite":  # hold the lock an ALTER needs
            holder.execute(sa.text(f"UPDATE {table} SET value = value WHERE key = 'old0000'"))
        app = make_app(PLOY_STATE_URL=state_url, PLOY_STATE_TABLE=table, PLOY_STATE_BUSY_TIMEOUT=1)
        start = time.monotonic()
        try:
            with app.app_context():
                g.env.STATE.get("old0001")
            outcome = "upgraded"
        except StateUnavailable as exc:
            outcome = str(exc)
        waited = time.monotonic() - start
        holder.rollback()
        holder.close()
        assert waited < 1 + 1.5, waited
        assert "cannot add the metadata and expiry columns" in outcome, outcome
        assert "ALTER TABLE" in outcome.upper()  # what to run, as the owner
        with app.app_context():  # once the transaction is gone, it goes through
            assert g.env.STATE.get("old0001") == "1"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
