"""State on a Flask-SQLAlchemy ``db``: its engine, its metadata, either init order."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, g
from flask_sqlalchemy import SQLAlchemy

from flask_ploy import FlaskPloy, PloyConfigError, StateUnavailable


def make(tmp_path: Any, ploy_first: bool, **config: Any) -> tuple[Flask, SQLAlchemy, FlaskPloy]:
    app = Flask("fsa", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/app.db",
        PLOY_BINDINGS={"state": {"STATE": "default", "USER_STATE": "users"}},
        **config,
    )
    db = SQLAlchemy()

    class Note(db.Model):  # type: ignore[name-defined,misc]
        id = sa.Column(sa.Integer, primary_key=True)
        text = sa.Column(sa.String(50))

    ploy = FlaskPloy(db=db)
    if ploy_first:
        ploy.init_app(app)
        db.init_app(app)
    else:
        db.init_app(app)
        ploy.init_app(app)
    app.Note = Note  # type: ignore[attr-defined]
    return app, db, ploy


@pytest.mark.parametrize("ploy_first", [True, False])
def test_state_uses_the_users_engine_and_metadata(tmp_path: Any, ploy_first: bool) -> None:
    app, db, ploy = make(tmp_path, ploy_first)
    assert "ploy_state" in db.metadata.tables  # migrations (Alembic) see it
    with app.app_context():
        db.create_all()
        assert set(sa.inspect(db.engine).get_table_names()) >= {"ploy_state", "note"}
        db.session.add(app.Note(text="hi"))  # type: ignore[attr-defined]
        db.session.commit()
        g.env.STATE.set("k", "v")
        assert g.env.STATE.incr("n") == 1
        # A pool of its own on the same database: a request holding an ORM
        # connection never waits for State's from the same pool.
        assert ploy.state_store("STATE").engine is not db.engine
        assert ploy.state_store("STATE").engine.url == db.engine.url
        # The ORM session still works transactionally on the same pool.
        db.session.add(app.Note(text="rolled back"))  # type: ignore[attr-defined]
        db.session.rollback()
        assert db.session.query(app.Note).count() == 1  # type: ignore[attr-defined]
        assert g.env.STATE.get("k") == "v"
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT key, value FROM ploy_state ORDER BY key")).all()
        assert [tuple(r) for r in rows] == [("k", "v"), ("n", "1")]
    assert "sqlalchemy" in app.extensions  # one SQLAlchemy instance: the user's


def test_table_is_created_without_create_all(tmp_path: Any) -> None:
    app, _, _ = make(tmp_path, ploy_first=False)
    with app.app_context():
        g.env.STATE.set("k", "v")
        assert g.env.STATE.get("k") == "v"


def test_borrowed_connection_is_restored_for_the_orm(tmp_path: Any) -> None:
    app, db, _ = make(tmp_path, ploy_first=False)
    with app.app_context():
        db.create_all()
        g.env.STATE.set("k", "v")
    # The connection goes back in non-autocommit mode: an ORM transaction
    # that is rolled back leaves nothing behind.
    with app.app_context(), db.engine.connect() as conn:
        conn.execute(sa.text("INSERT INTO note (text) VALUES ('x')"))
        conn.rollback()
        assert conn.execute(sa.text("SELECT COUNT(*) FROM note")).scalar() == 0


def test_named_bind(tmp_path: Any) -> None:
    app, db, ploy = make(
        tmp_path,
        ploy_first=True,
        SQLALCHEMY_BINDS={"kv": f"sqlite:///{tmp_path}/kv.db"},
        PLOY_STATE_BIND="kv",
    )
    assert "ploy_state" in db.metadatas["kv"].tables
    assert "ploy_state" not in db.metadata.tables
    with app.app_context():
        db.create_all()
        g.env.STATE.set("k", "v")
        assert ploy.state_store("STATE").engine.url == db.engines["kv"].url
        assert "ploy_state" in sa.inspect(db.engines["kv"]).get_table_names()
        assert "ploy_state" not in sa.inspect(db.engine).get_table_names()


def test_unknown_bind(tmp_path: Any) -> None:
    app, _, _ = make(tmp_path, ploy_first=True, PLOY_STATE_BIND="nope")
    with app.app_context(), pytest.raises(PloyConfigError, match="no bind 'nope'"):
        g.env.STATE.get("k")


def test_db_and_state_url_together_is_an_error(tmp_path: Any) -> None:
    with pytest.raises(
        PloyConfigError, match="PLOY_STATE_URL'] is set, but FlaskPloy was given db="
    ):
        make(tmp_path, ploy_first=True, PLOY_STATE_URL="sqlite://")


def test_db_never_registered(tmp_path: Any) -> None:
    app = Flask("fsa", root_path=str(tmp_path))
    app.config.update(TESTING=True, PLOY_BINDINGS={"state": {"STATE": "default"}})
    FlaskPloy(app, db=SQLAlchemy())
    with app.app_context(), pytest.raises(RuntimeError, match="db.init_app"):
        g.env.STATE.get("k")


def test_resource_override_uses_its_own_engine(tmp_path: Any) -> None:
    app, db, ploy = make(
        tmp_path, ploy_first=False, PLOY_STATE_RESOURCES={"users": f"sqlite:///{tmp_path}/users.db"}
    )
    with app.app_context():
        g.env.USER_STATE.set("u", "1")
        assert ploy.state_store("USER_STATE").engine is not db.engine


def test_an_orm_flush_then_a_state_write_fails_at_once_on_sqlite(tmp_path: Any) -> None:
    """SQLite has one writer: the session's flush holds the lock until commit.

    State must not wait for the request's own lock (it used to wait the whole
    busy timeout, then fail with "database is locked").
    """
    app, db, _ = make(tmp_path, ploy_first=False, PLOY_STATE_BUSY_TIMEOUT=5)
    with app.app_context():
        db.create_all()
        g.env.STATE.set("before", "ok")
        db.session.add(app.Note(text="flushed"))  # type: ignore[attr-defined]
        db.session.flush()  # the session now holds SQLite's write lock
        for op in (
            lambda: g.env.STATE.set("k", "v"),
            lambda: g.env.STATE.incr("n"),
            lambda: g.env.STATE.delete("before"),
        ):
            start = time.monotonic()
            with pytest.raises(StateUnavailable, match="db.session.commit"):
                op()
            assert time.monotonic() - start < 0.2
        assert g.env.STATE.get("before") == "ok"  # reads never wait (WAL)
        db.session.commit()
        g.env.STATE.set("k", "v")  # after the commit, it writes at once
        assert g.env.STATE.incr("n") == 1


def test_another_writer_is_still_waited_for_with_db(tmp_path: Any) -> None:
    """Only the request's own lock fails at once; another process's is waited for."""
    app, db, _ = make(tmp_path, ploy_first=False, PLOY_STATE_BUSY_TIMEOUT=2)
    with app.app_context():
        db.create_all()
        g.env.STATE.set("k", "0")
    other = sqlite3.connect(f"{tmp_path}/app.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.4, other.rollback)
    timer.start()
    try:
        with app.app_context():
            start = time.monotonic()
            g.env.STATE.set("k", "1")
            assert 0.35 < time.monotonic() - start < 1.5
            assert g.env.STATE.get("k") == "1"
    finally:
        timer.join()
        other.close()


def test_pool_size_concurrency_never_deadlocks_on_its_own_pool(tmp_path: Any) -> None:
    """Each request holds an ORM connection and uses State: with one pool for
    both, pool_size such requests at once waited for each other."""
    app, db, _ = make(
        tmp_path,
        ploy_first=False,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 2, "max_overflow": 0, "pool_timeout": 2},
    )
    with app.app_context():
        db.create_all()
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            with app.app_context():
                db.session.execute(sa.text("SELECT 1"))  # holds a pooled connection
                barrier.wait()
                g.env.STATE.set(f"k{i}", "v")
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(2)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert errors == []
    assert time.monotonic() - start < 2


def test_db_must_be_flask_sqlalchemy(tmp_path: Any) -> None:
    app = Flask("fsa", root_path=str(tmp_path))
    app.config.update(PLOY_BINDINGS={"state": {"STATE": "default"}})
    with pytest.raises(PloyConfigError, match="takes a flask_sqlalchemy.SQLAlchemy"):
        FlaskPloy(app, db=object())


def test_a_fresh_database_gets_the_same_explanation(tmp_path: Any) -> None:
    """The very first State use on a new SQLite file must switch it to WAL,
    which needs the lock the flushed session holds: the same message, at once
    (it was 'database is locked')."""
    app, db, _ = make(tmp_path, ploy_first=False, PLOY_STATE_BUSY_TIMEOUT=5)
    with app.app_context():
        db.create_all()
        db.session.add(app.Note(text="flushed"))  # type: ignore[attr-defined]
        db.session.flush()
        start = time.monotonic()
        with pytest.raises(StateUnavailable, match="db.session.commit"):
            g.env.STATE.incr("users:created")
        assert time.monotonic() - start < 0.2
        db.session.commit()
        assert g.env.STATE.incr("users:created") == 1
