"""Invalidations a cache backend failed to apply, kept until they are."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

log = logging.getLogger("flask_ploy.cache")


class PendingDeletes:
    """Full keys whose invalidation (a ``delete``, or an overwrite) failed.

    Each must be deleted on the server before this process serves it again.
    Every entry carries a sequence number, so that an operation that
    succeeds forgets only the entries that were pending when it started, not
    one a concurrent failure added meanwhile.

    At most *limit* keys are remembered (a key is at most 512 bytes, so
    about 6 MiB). Past that, the namespace of the key that did not fit is
    marked *lost*: its keys are forgotten, and the whole namespace must be
    cleared before any of its keys is served again (a cache may lose
    entries; it must not serve stale ones). Thread-safe.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._keys: dict[str, tuple[str, int]] = {}  # full key -> (namespace, seq)
        self._lost: dict[str, int] = {}  # namespace -> seq when marked
        #: namespace -> (seq when its clear began, the clear's cursor)
        self._clearing: dict[str, tuple[int, int]] = {}
        self._seq = 0
        self._next_try: dict[str, float] = {}  # "" (batches) or a namespace -> monotonic
        self._lock = threading.Lock()
        self._stepping = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._keys or self._lost)

    def __len__(self) -> int:
        return len(self._keys)

    def reset_lock(self) -> None:
        """Replace the locks (in a forked child)."""
        self._lock = threading.Lock()
        self._stepping = threading.Lock()

    @property
    def seq(self) -> int:
        """The sequence number of the latest change."""
        return self._seq

    def add(self, keys: Iterable[str], namespace: str) -> None:
        """Remember *keys* (of *namespace*) as not invalidated."""
        with self._lock:
            if namespace in self._lost:
                return
            for key in keys:
                self._seq += 1
                if key in self._keys or len(self._keys) < self.limit:
                    self._keys[key] = (namespace, self._seq)
                    continue
                log.error(
                    "flask-ploy: more than %d cache invalidations could not be applied;"
                    " all of %r will be cleared before it is served again",
                    self.limit,
                    namespace,
                )
                self._lost[namespace] = self._seq
                for doomed in [k for k, (ns, _) in self._keys.items() if ns == namespace]:
                    del self._keys[doomed]
                return

    def snapshot(self, keys: Iterable[str]) -> dict[str, int]:
        """The pending ones of *keys*, with their sequence numbers."""
        pending = self._keys
        found: dict[str, int] = {}
        for key in keys:
            entry = pending.get(key)
            if entry is not None:
                found[key] = entry[1]
        return found

    def discard(self, snapshot: Mapping[str, int]) -> None:
        """Forget the keys of *snapshot* (deleted or overwritten on the
        server), unless they failed again since it was taken."""
        if not snapshot:
            return
        with self._lock:
            for key, seq in snapshot.items():
                entry = self._keys.get(key)
                if entry is not None and entry[1] == seq:
                    del self._keys[key]

    def lost(self, namespace: str) -> bool:
        """Whether *namespace* must be cleared before it is served."""
        return namespace in self._lost

    def begin_step(self, namespace: str, now: float) -> tuple[int, int] | None:
        """Start a step of the clear of lost *namespace*: ``(since, cursor)``,
        the sequence number when the clear began and the cursor to go on from
        (``0`` to begin); ``None`` while another thread steps, or during the
        cooldown after a failed step. Then call :meth:`end_step`."""
        if now < self._next_try.get(namespace, 0.0) or not self._stepping.acquire(blocking=False):
            return None
        return self._clearing.get(namespace) or (self._seq, 0)

    def end_step(
        self, namespace: str, since: int, cursor: int, retry_at: float | None = None
    ) -> None:
        """End the step begun by :meth:`begin_step`: it reached *cursor* (0:
        the clear is done), or failed (then no step before *retry_at*)."""
        try:
            if retry_at is not None:
                self._next_try[namespace] = retry_at
            elif cursor:
                self._clearing[namespace] = (since, cursor)
            else:
                self._clearing.pop(namespace, None)
                self.cleared(namespace, since)
        finally:
            self._stepping.release()

    def cleared(self, namespace: str, since: int) -> None:
        """*namespace* was cleared on the server by a clear that began at
        sequence number *since*: forget what it covered."""
        with self._lock:
            if self._lost.get(namespace, since + 1) <= since:
                del self._lost[namespace]
            covered = [k for k, (ns, seq) in self._keys.items() if ns == namespace and seq <= since]
            for key in covered:
                del self._keys[key]

    def due(self, what: str, now: float, interval: float) -> bool:
        """Whether to try *what* (a namespace clear, or ``""`` for a batch of
        keys) now; then not again for *interval* seconds (at least 0.1)."""
        if now < self._next_try.get(what, 0.0):
            return False
        self._next_try[what] = now + max(interval, 0.1)
        return True

    def batch(self, size: int = 500) -> dict[str, int]:
        """Up to *size* pending keys, oldest first, with their sequence numbers."""
        with self._lock:
            items = list(self._keys.items())[:size]
        return {key: seq for key, (_, seq) in items}
