"""State: durable strings in a SQL table, through SQLAlchemy engines.

- :mod:`~flask_ploy.state.binding`: :class:`State`, what ``g.env.STATE`` is.
- :mod:`~flask_ploy.state.transaction`: :class:`Transaction`, the ``tx`` of
  ``STATE.transact(fn)``.
- :mod:`~flask_ploy.state.bulk`: the multi-key operations of :class:`State`.
- :mod:`~flask_ploy.state.options`: the checks of ``metadata``, ``ttl`` and ``expires_at``.
- :mod:`~flask_ploy.state.reads`: the multi-row reads both share, and the result types.
- :mod:`~flask_ploy.state.connections`: the connections of one app context,
  and the one failure policy every operation runs under.
- :mod:`~flask_ploy.state.store`: :class:`StateStore`, the table on one database.
- :mod:`~flask_ploy.state.engine`: engines with flask-ploy's defaults; fork safety.
- :mod:`~flask_ploy.state.dialects`: every SQL string, per database.
- :mod:`~flask_ploy.state.schema`: the table definition.

State's statements run at the driver (DBAPI) level, prepared once per
dialect, because a SQLAlchemy Core statement costs several times the driver
call it wraps. So SQLAlchemy's engine events (``echo``,
``SQLALCHEMY_RECORD_QUERIES``, SQLAlchemy-based tracing) do not see them.
"""

from __future__ import annotations

from .binding import State
from .connections import Connections, Lease
from .options import MAX_METADATA_BYTES
from .reads import CHUNK, LIST_MAX, Entry, EntryList, KeyInfo, ListResult, ValueWithMetadata
from .schema import make_table
from .store import StateSettings, StateStore
from .transaction import Transaction

__all__ = [
    "CHUNK",
    "LIST_MAX",
    "MAX_METADATA_BYTES",
    "Connections",
    "Entry",
    "EntryList",
    "KeyInfo",
    "Lease",
    "ListResult",
    "State",
    "StateSettings",
    "StateStore",
    "Transaction",
    "ValueWithMetadata",
    "make_table",
]
