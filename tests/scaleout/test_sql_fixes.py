"""The fixes the scale-out engines needed, each against a real server.

- PostgreSQL ``incr`` uses only IMMUTABLE functions (Citus refuses others in
  ``ON CONFLICT DO UPDATE`` on a distributed table). Citus is neither in
  Debian nor on PyPI, so PostgreSQL itself is the judge: it accepts an
  expression in a generated column only if every function in it is
  IMMUTABLE; and ``pg_proc.provolatile`` is checked for each function.
- A read timeout on PostgreSQL statements: a frozen server (``SIGSTOP``)
  no longer blocks an operation until it resumes.
- CockroachDB URLs are refused with the reason.
- MariaDB URLs with several hosts: the first that answers and is ready; a
  server without Galera is taken as it is. ``wsrep_sync_wait`` and bad host
  lists are checked when the app starts.
- ``DELETE ... RETURNING`` is used only through Spider: plain InnoDB keeps
  the plain statement (the cost of RETURNING is measured here).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import g

from flask_ploy import PloyConfigError, StateUnavailable
from flask_ploy.state.dialects import PostgresDialect

from .. import pgserver, servers
from ..test_faults import figure
from . import engines


@pytest.fixture
def pg_url() -> str:
    servers.need(servers.sql_ok(servers.POSTGRES_URL), f"PostgreSQL at {servers.POSTGRES_URL}")
    return servers.POSTGRES_URL


@pytest.fixture
def mariadb_url() -> str:
    servers.need(servers.sql_ok(servers.MARIADB_URL), f"MariaDB at {servers.MARIADB_URL}")
    return servers.MARIADB_URL


def _pg_dialect(engine: sa.Engine) -> PostgresDialect:
    return PostgresDialect(engine.dialect, "ploy_state")


def _generated(conn: sa.Connection, expression: str) -> None:
    """A temporary table with *expression* (over column ``v``) as a generated column."""
    name = f"scale_gen_{uuid.uuid4().hex[:8]}"
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {name}"
        f" (v bytea, x bytea GENERATED ALWAYS AS ({expression}) STORED)"
    )
    conn.exec_driver_sql(f"DROP TABLE {name}")


def test_postgres_incr_uses_only_immutable_functions(
    pg_url: str, request: pytest.FixtureRequest
) -> None:
    engine = sa.create_engine(pg_url)
    try:
        dialect = _pg_dialect(engine)
        value = dialect.incr_value("v", "5")
        guard = f"CASE WHEN {dialect.incr_guard('v')} THEN v END"
        column = f"{dialect.t}.{dialect.v}"
        assert dialect.incr_value(column, "?") in dialect.incr_sql()
        assert dialect.incr_guard(column) in dialect.incr_sql()
        with engine.connect() as conn:
            _generated(conn, value)
            _generated(conn, guard)
            conn.rollback()
            # The check can fail: the expression as it was, with convert_to
            # (STABLE), is refused the same way.
            old = value.replace("decode(", "convert_to(").replace("'escape')", "'UTF8')", 1)
            assert "convert_to(" in old
            with pytest.raises(sa.exc.DBAPIError, match="generation expression is not immutable"):
                _generated(conn, old)
            conn.rollback()
            # And function by function, from the catalog.
            functions = {
                "encode(bytea,text)": "encode",
                "decode(text,text)": "decode",
                "int8in(cstring)": "text -> bigint cast",
                "int8out(bigint)": "bigint -> text cast",
                "textout(text)": "the casts' text output",
                "int8pl(bigint,bigint)": "bigint + bigint",
                "textregexeq(text,text)": "text ~ text",
            }
            rows = dict(
                conn.exec_driver_sql(
                    "SELECT p.oid::regprocedure::text, p.provolatile FROM pg_proc p"
                    " WHERE p.oid = ANY(%(oids)s::regprocedure[])",
                    {"oids": list(functions)},
                ).all()
            )
            convert = conn.exec_driver_sql(
                "SELECT provolatile FROM pg_proc WHERE oid = 'convert_to(text,name)'::regprocedure"
            ).scalar()
            # The planner folds the expressions over constants into constants, which
            # it does only for IMMUTABLE functions: 41 + 5 is b'46' at plan time.
            plan = conn.exec_driver_sql(
                "EXPLAIN (VERBOSE, COSTS OFF) SELECT "
                + dialect.incr_value("v", "5")
                + ", "
                + dialect.incr_guard("v")
                + " FROM (VALUES ('41'::bytea)) s(v)"
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == len(functions), rows
    assert set(rows.values()) == {"i"}, rows
    assert convert == "s"
    text = " ".join(r[0] for r in plan)
    assert "Output: '\\x3436'::bytea, true" in text, text
    figure(
        request,
        "postgresql incr: every function IMMUTABLE ("
        + ", ".join(sorted(f.split("(")[0] for f in rows))
        + "); a generated column accepts both expressions; convert_to (STABLE) refused",
    )


def test_postgres_incr_still_counts(pg_url: str, make_app: Any, state_table: str) -> None:
    app = make_app(
        {"state": {"STATE": "default"}}, PLOY_STATE_URL=pg_url, PLOY_STATE_TABLE=state_table
    )
    with app.app_context():
        g.env.STATE.delete("scale-n")
        assert g.env.STATE.incr("scale-n", 9223372036854775806) == 9223372036854775806
        assert g.env.STATE.incr("scale-n") == 9223372036854775807
        with pytest.raises(ValueError):
            g.env.STATE.incr("scale-n")
        g.env.STATE.set("scale-n", "-7")
        assert g.env.STATE.incr("scale-n", 10) == 3
        g.env.STATE.set("scale-n", "007")  # not canonical: refused, unchanged
        with pytest.raises(ValueError):
            g.env.STATE.incr("scale-n")
        assert g.env.STATE.get("scale-n") == "007"
        g.env.STATE.delete("scale-n")


@pytest.fixture
def private_pg() -> Iterator[pgserver.PgServer]:
    pgserver.need_postgres()
    with pgserver.postgres() as pg:
        yield pg


def _backends(pg: pgserver.PgServer) -> list[int]:
    pid = int(Path(pg.datadir, "postmaster.pid").read_text().split()[0])
    return [pid, *engines.children(pid)]


@pytest.mark.slow
def test_frozen_postgres_is_bounded_by_the_read_timeout(
    private_pg: pgserver.PgServer, make_app: Any, request: pytest.FixtureRequest
) -> None:
    timeout = 1.0
    app = make_app(
        {"state": {"STATE": "default"}},
        PLOY_STATE_URL=private_pg.url,
        PLOY_STATE_ENGINE_OPTIONS={"connect_args": {"read_timeout": timeout, "connect_timeout": 2}},
    )
    with app.app_context():
        g.env.STATE.set("k", "before")
    procs = _backends(private_pg)
    for pid in procs:
        os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with app.app_context(), pytest.raises(StateUnavailable) as info:
            g.env.STATE.get("k")
        took = time.monotonic() - start
    finally:
        for pid in procs:
            os.kill(pid, signal.SIGCONT)
    with app.app_context():
        assert g.env.STATE.get("k") == "before"  # a new connection, at once
    figure(
        request,
        f"postgresql frozen (SIGSTOP), read_timeout {timeout:g} s: get gave up after"
        f" {took:.1f} s (pre-ping cancelled, socket cut, then connect_timeout 2 s);"
        " working again at once after SIGCONT",
    )
    # The pool's pre-ping times out (deadline, then the cancel's grace, then the
    # socket is cut), and the new connection the pool then opens waits for the
    # frozen server's answer until connect_timeout.
    assert "timeout" in str(info.value), info.value
    assert took < timeout + 2.5 + 2 + 1.5


@pytest.mark.parametrize(
    "url",
    [
        "cockroachdb://root@127.0.0.1:26257/defaultdb",
        "cockroachdb+psycopg://root@127.0.0.1:26257/defaultdb?sslmode=disable",
    ],
)
def test_cockroachdb_is_refused_with_the_reason(make_app: Any, url: str) -> None:
    with pytest.raises(PloyConfigError) as info:
        make_app({"state": {"STATE": "default"}}, PLOY_STATE_URL=url)
    message = str(info.value)
    assert "CockroachDB is not supported" in message
    assert "no CockroachDB server was available to test" in message
    assert "127.0.0.1:26257" in message


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("host=127.0.0.1:x", "is not HOST or HOST:PORT"),
        ("host=:3306", "is not HOST or HOST:PORT"),
        ("host=127.0.0.1&wsrep_sync_wait=16", "wsrep_sync_wait must be a number from 0 to 15"),
        ("wsrep_sync_wait=yes", "wsrep_sync_wait must be a number from 0 to 15"),
    ],
)
def test_bad_mariadb_multi_host_urls(make_app: Any, query: str, error: str) -> None:
    with pytest.raises(PloyConfigError, match=error):
        make_app({"state": {"STATE": "default"}}, PLOY_STATE_URL=f"mariadb+pymysql://u@/db?{query}")


def test_mariadb_multi_host_url_on_a_server_without_galera(
    mariadb_url: str, make_app: Any, state_table: str
) -> None:
    """The first host is down, the second is a plain MariaDB: taken as it is,
    with wsrep_sync_wait set (harmless without Galera)."""
    real = sa.engine.make_url(mariadb_url)
    dead = servers.free_port()
    url = real.set(host=None, port=None).render_as_string(hide_password=False) + (
        f"?host=127.0.0.1:{dead}&host={real.host}:{real.port or 3306}&wsrep_sync_wait=1"
    )
    app = make_app(
        {"state": {"STATE": "default"}}, PLOY_STATE_URL=url, PLOY_STATE_TABLE=state_table
    )
    with app.app_context():
        g.env.STATE.set("multi", "host")
        assert g.env.STATE.get("multi") == "host"
        cur = g.env.STATE.connection().cursor()
        cur.execute("SELECT @@session.wsrep_sync_wait, @@port")
        assert cur.fetchone() == (1, real.port or 3306)
        assert g.env.STATE.delete("multi") is True
        assert g.env.STATE._store.dialect.returning == ""  # plain InnoDB: no RETURNING


def test_mariadb_multi_host_url_all_down(make_app: Any) -> None:
    ports = [servers.free_port(), servers.free_port()]
    hosts = "&".join(f"host=127.0.0.1:{p}" for p in ports)
    app = make_app(
        {"state": {"STATE": "default"}}, PLOY_STATE_URL=f"mariadb+pymysql://u@/db?{hosts}"
    )
    with app.app_context(), pytest.raises(StateUnavailable) as info:
        g.env.STATE.get("k")
    for port in ports:
        assert f"127.0.0.1:{port}:" in str(info.value)


def test_returning_would_cost_on_plain_mariadb(
    mariadb_url: str, request: pytest.FixtureRequest, state_table: str
) -> None:
    """Why RETURNING is only used through Spider: measured on InnoDB."""
    engine = sa.create_engine(mariadb_url)
    table = f"{state_table}_ret"
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            raw.autocommit(True)
            cur = raw.cursor()
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(
                f"CREATE TABLE {table} (resource VARCHAR(64) NOT NULL, `key` VARBINARY(512)"
                " NOT NULL, value LONGBLOB NOT NULL, PRIMARY KEY (resource, `key`))"
            )

            # Every phase in a transaction: the statements' cost, not the fsync
            # of a commit per row.
            def one(returning: str, n: int = 300) -> float:
                cur.execute("BEGIN")
                cur.executemany(
                    f"INSERT INTO {table} VALUES ('r', %s, 'v')", [(f"k{i}",) for i in range(n)]
                )
                times = []
                for i in range(n):
                    start = time.perf_counter()
                    cur.execute(
                        f"DELETE FROM {table} WHERE resource = 'r' AND `key` = %s{returning}",
                        (f"k{i}",),
                    )
                    times.append(time.perf_counter() - start)
                    assert cur.rowcount == 1
                cur.execute("COMMIT")
                return statistics.median(times)

            def clear(returning: str, n: int = 5000) -> float:
                cur.execute("BEGIN")
                cur.executemany(
                    f"INSERT INTO {table} VALUES ('c', %s, 'v')", [(f"k{i}",) for i in range(n)]
                )
                start = time.perf_counter()
                cur.execute(f"DELETE FROM {table} WHERE resource = 'c'{returning}")
                took = time.perf_counter() - start
                assert cur.rowcount == n
                cur.execute("COMMIT")
                return took

            plain, ret = one(""), one(" RETURNING 1")
            cplain, cret = clear(""), clear(" RETURNING 1")
            cur.execute(f"DROP TABLE {table}")
    finally:
        engine.dispose()
    figure(
        request,
        f"mariadb InnoDB, DELETE ... RETURNING 1: one key {plain * 1e6:.0f} ->"
        f" {ret * 1e6:.0f} us (median of 300), clear of 5,000 keys"
        f" {cplain * 1e3:.1f} -> {cret * 1e3:.1f} ms; so only Spider tables use it",
    )
