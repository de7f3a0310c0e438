"""State on a Flask-SQLAlchemy ``db`` (``FlaskPloy(app, db=db)``), through its public API.

The state table goes on the bind's metadata, so ``db.create_all()`` and
Alembic (Flask-Migrate) see it. State's connections come from a pool of its
own, made like Flask-SQLAlchemy's (same URL, connection creation and connect
events), so a request that holds an ORM connection never waits for a second
one from the same pool. On SQLite, a State write never waits for the write
lock the request's own session holds (it flushed and has not committed):
:func:`session_holds_write_lock` tells, and the store refuses at once.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..errors import PloyConfigError


def check(db: Any) -> None:
    """Refuse anything but a Flask-SQLAlchemy ``SQLAlchemy`` instance.

    :raises PloyConfigError: Flask-SQLAlchemy is missing or *db* is not its.
    """
    try:
        from flask_sqlalchemy import SQLAlchemy
    except ImportError:
        raise PloyConfigError(
            "FlaskPloy(db=...) needs Flask-SQLAlchemy: pip install 'flask-ploy[flask-sqlalchemy]'"
        ) from None
    if not isinstance(db, SQLAlchemy):
        raise PloyConfigError(
            f"FlaskPloy(db=...) takes a flask_sqlalchemy.SQLAlchemy, not {type(db).__name__}"
        )


def bind_metadata(db: Any, bind: str | None) -> sa.MetaData:
    """The metadata of bind *bind* (``None``: the default), made if no model uses it yet."""
    metadata: sa.MetaData | None = db.metadatas.get(bind)
    if metadata is None:
        metadata = sa.MetaData(naming_convention=dict(db.metadata.naming_convention))
        metadata.info["bind_key"] = bind
        db.metadatas[bind] = metadata
    return metadata


def user_engine(db: Any, bind: str | None) -> sa.Engine:
    """Flask-SQLAlchemy's engine of bind *bind* for the current app.

    :raises RuntimeError: The current app is not registered with *db*.
    :raises PloyConfigError: *db* has no such bind.
    """
    try:
        engines = db.engines
    except RuntimeError as exc:
        raise RuntimeError(
            "FlaskPloy was given db=, but the current app is not registered"
            " with that Flask-SQLAlchemy instance. Call db.init_app(app) as well."
        ) from exc
    if bind not in engines:
        raise PloyConfigError(
            f"PLOY_STATE_BIND: Flask-SQLAlchemy has no bind {bind!r};"
            f" its binds are {sorted(k or 'None' for k in engines)}"
        )
    engine: sa.Engine = engines[bind]
    return engine


def sibling_engine(engine: sa.Engine) -> sa.Engine | None:
    """An engine on *engine*'s database with a pool of its own, or ``None``
    when the pool cannot be copied (a ``StaticPool`` or ``SingletonThreadPool``
    is one connection: a copy would be another in-memory database)."""
    if isinstance(engine.pool, (sa.pool.StaticPool, sa.pool.SingletonThreadPool)):
        return None
    return sa.create_engine(engine.url, pool=engine.pool.recreate())


def session_holds_write_lock(db: Any, engine: sa.Engine) -> bool:
    """Whether the current context's ``db.session`` has an open write
    transaction on *engine* (Flask-SQLAlchemy's, on SQLite): it flushed and
    has not committed, so it holds the database's write lock."""
    if not db.session.registry.has():
        return False
    session = db.session()
    if not session.in_transaction():
        return False
    try:
        conn = session.connection(bind_arguments={"bind": engine})
    except sa.exc.SQLAlchemyError:
        return False
    return bool(getattr(conn.connection.driver_connection, "in_transaction", False))
