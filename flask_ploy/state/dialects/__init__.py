"""The SQL of every database State runs on, and what its errors mean.

Each :class:`Dialect` writes its statements once per store, in the driver's
paramstyle, and answers the per-connection questions: how to set a
connection up, how long the database itself waits for a lock, and what a
driver exception means (:meth:`Dialect.classify`). Nothing outside this
package holds SQL text or asks which database it is talking to.

To add a database: subclass :class:`Dialect`, fill in the statements that
differ (``upsert``, ``insert_if_absent``, ``incr``), the connection methods
and :meth:`~Dialect.classify`, and register the class in :data:`DIALECTS` (one module per database)
under SQLAlchemy's dialect name. The shared contract suite
(``tests/test_state_contract.py``) then tells what is missing.
"""

from __future__ import annotations

from .base import Dialect, Problem
from .mysql import MySQLDialect
from .postgres import PostgresDialect
from .sqlite import WAL_CHECKPOINT_WAIT, SQLiteDialect

__all__ = [
    "DIALECTS",
    "REFUSED",
    "WAL_CHECKPOINT_WAIT",
    "Dialect",
    "MySQLDialect",
    "PostgresDialect",
    "Problem",
    "SQLiteDialect",
]

#: SQLAlchemy dialect names that are refused, with the reason.
REFUSED: dict[str, str] = {
    "cockroachdb": (
        "CockroachDB is not supported: State's SQL, lock timeouts and retry rules are"
        " tested on SQLite, PostgreSQL and MariaDB/MySQL only, and no CockroachDB server"
        " was available to test them (a postgresql:// URL pointed at CockroachDB is not"
        " supported either). For distributed PostgreSQL, Citus runs State's SQL; see the"
        " Scaling page of the docs"
    ),
}

#: SQLAlchemy dialect name -> the :class:`Dialect` that serves it.
DIALECTS: dict[str, type[Dialect]] = {
    name: cls for cls in (SQLiteDialect, PostgresDialect, MySQLDialect) for name in cls.names
}
