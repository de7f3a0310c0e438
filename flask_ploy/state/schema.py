"""The state table: one table for every State resource of an app.

Rows are keyed by ``(resource, key)``. On SQLite keys and values are
``TEXT`` (compared bytewise by the default ``BINARY`` collation); on
PostgreSQL and MariaDB/MySQL they are UTF-8 bytes (``BYTEA``,
``VARBINARY``/``LONGBLOB``), so keys compare bytewise everywhere and values
may hold any string, NUL included.

``metadata`` (compact JSON text, or ``NULL``) and ``expires_at`` (epoch
seconds, or ``NULL``: never) came in 0.2.0; a table made by an
earlier version gets them on first use, with the expiry index
(:meth:`~flask_ploy.state.dialects.Dialect.upgrade_statements`).
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

#: The default table name (``PLOY_STATE_TABLE``).
DEFAULT_TABLE = "ploy_state"

KEY_TYPE = (
    sa.Text()
    .with_variant(postgresql.BYTEA(), "postgresql")
    .with_variant(mysql.VARBINARY(512), "mysql", "mariadb")
)
VALUE_TYPE = (
    sa.Text()
    .with_variant(postgresql.BYTEA(), "postgresql")
    .with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
)

#: Epoch seconds (a float: ``ttl`` is exact, not rounded to whole seconds).
EXPIRY_TYPE: sa.Double[float] = sa.Double()


def expiry_index(table: str) -> str:
    """The name of the expiry index of *table* (under MySQL's 64 characters)."""
    name = f"ix_{table}_expiry"
    return name if len(name) <= 60 else f"ix_{table[:40]}_{zlib.crc32(table.encode()):08x}_expiry"


def make_table(metadata: sa.MetaData, name: str = DEFAULT_TABLE) -> sa.Table:
    """Return the state table on *metadata*, defining it if needed.

    Put it on Flask-SQLAlchemy's metadata and Alembic (Flask-Migrate) will
    see it.
    """
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(
        name,
        metadata,
        sa.Column("resource", sa.String(64), primary_key=True),
        sa.Column("key", KEY_TYPE, primary_key=True),
        sa.Column("value", VALUE_TYPE, nullable=False),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("expires_at", EXPIRY_TYPE, nullable=True),
        sa.Index(
            expiry_index(name),
            "resource",
            "expires_at",
            sqlite_where=sa.text("expires_at IS NOT NULL"),
            postgresql_where=sa.text("expires_at IS NOT NULL"),
        ),
        sqlite_with_rowid=False,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
        comment="flask-ploy State bindings",
    )
