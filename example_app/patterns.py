"""The "Common Patterns" of Ploy's Cache and State docs, as JSON endpoints.

Each seed function is ported as written (``*_seed``), and where it has a
race, the operation flask-ploy adds stands beside it: ``Cache.get_or_set``
for the expensive report (one computation, not one per waiting request),
``Cache.incr(key, ttl=)`` for rate limits, ``State.incr`` for counters,
``Cache.add`` for locks and ``State.update`` for partial JSON updates.

Cache values can vanish at any time (expiry, eviction, an outage), so every
``get`` here handles ``None``; ``incr`` and ``add`` raise
:class:`~flask_ploy.CacheUnavailable` when the cache is down, and the views
catch it and carry on without the cache.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import secrets
import time
from typing import Any

from flask import Blueprint, abort, current_app, g, request
from flask.typing import ResponseReturnValue

from flask_ploy import CacheUnavailable

bp = Blueprint("patterns", __name__)


# -- Caching expensive computations -------------------------------------------


def compute_expensive_report(report_id: str) -> dict[str, Any]:
    """Stands in for a slow query: sums the counters, then sleeps."""
    counters = counter_values()
    time.sleep(current_app.config["REPORT_SECONDS"])
    return {
        "id": report_id,
        "counters": counters,
        "total": sum(v for v in counters.values() if isinstance(v, int)),
        "generated_at": time.time(),
        "generated_by": os.getpid(),
    }


#: How long a report stays in the cache, at most: 10 minutes, as in the seed.
REPORT_TTL = 600


def report_ttl() -> int:
    """The report's TTL: ``REPORT_TTL`` from the config, else :data:`REPORT_TTL`."""
    return int(current_app.config.get("REPORT_TTL", REPORT_TTL))


def cache_report(report_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """Cache *report* for :func:`report_ttl` seconds; return it with its expiry.

    A cache has no call that reads the time left on an entry, so the expiry
    is stored beside the data (``expires_at``, a Unix time): the page counts
    it down. It is an upper bound: the cache may drop the entry sooner.
    """
    ttl = report_ttl()
    report = {**report, "expires_at": time.time() + ttl}
    g.env.CACHE.set(f"report:{report_id}", json.dumps(report), ttl=ttl)
    return report


def cached_report(report_id: str) -> dict[str, Any] | None:
    """The cached report, or ``None``: never computes it."""
    cached = g.env.CACHE.get(f"report:{report_id}")
    return json.loads(cached) if cached else None


def get_report_seed(report_id: str) -> tuple[dict[str, Any], bool]:
    """The seed's ``getReport``; also returns whether it came from the cache.

    It stampedes: while the report is missing (cold, or just expired),
    every request that arrives computes it, each one for itself.
    """
    cached = cached_report(report_id)
    if cached:
        return cached, True
    report = compute_expensive_report(report_id)
    return cache_report(report_id, report), False


def get_report(report_id: str) -> tuple[dict[str, Any], bool]:
    """The report, computed once however many requests want it at once.

    ``get_or_set`` lets one request (in any worker, on any machine sharing
    the cache) compute a missing report while the others wait for it, and
    recomputes a hot report shortly before it expires while the others are
    still served the cached one. Also returns whether it came from the cache.
    """
    computed = False
    ttl = report_ttl()

    def compute() -> str:
        nonlocal computed
        computed = True
        report = compute_expensive_report(report_id)
        return json.dumps({**report, "expires_at": time.time() + ttl})

    report = json.loads(g.env.CACHE.get_or_set(f"report:{report_id}", compute, ttl=ttl))
    return report, not computed


def expires_in(report: dict[str, Any]) -> int | None:
    """Whole seconds until *report* leaves the cache, at most; ``None`` if unknown."""
    if "expires_at" not in report:
        return None
    return max(0, math.ceil(report["expires_at"] - time.time()))


@bp.get("/reports/<report_id>")
def report(report_id: str) -> ResponseReturnValue:
    """A slow report, cached for 10 minutes; computed once however many ask at once."""
    data, cached = get_report(report_id)
    return {"report": data, "cached": cached, "expires_in": expires_in(data)}


@bp.get("/reports/<report_id>/seed")
def report_seed(report_id: str) -> ResponseReturnValue:
    """The same report the seed's way: get, compute on a miss, set (stampedes)."""
    data, cached = get_report_seed(report_id)
    return {"report": data, "cached": cached, "expires_in": expires_in(data)}


@bp.post("/reports/<report_id>/refresh")
def refresh_report(report_id: str) -> ResponseReturnValue:
    """Recompute a report now, one request at a time: a lock made with ``add``.

    ``add`` stores only if the key is absent, atomically, so of many
    concurrent refreshes exactly one gets the lock; the others answer 409
    at once instead of all computing the same report (a "dogpile"). The
    lock's TTL frees it even if this process dies mid-way.
    """
    lock = f"lock:report:{report_id}"
    token = secrets.token_hex(8)
    try:
        locked = g.env.CACHE.add(lock, token, ttl=30)
    except CacheUnavailable:
        # No cache, no lock: compute anyway. The worst case is duplicate
        # work, and the report cannot be cached right now either.
        return {"report": compute_expensive_report(report_id), "locked": False, "expires_in": None}
    if not locked:
        return {"error": "another request is refreshing this report"}, 409
    try:
        data = cache_report(report_id, compute_expensive_report(report_id))
    finally:
        # Release only our own lock. Reading then deleting is not atomic, but
        # the lock can only change hands after its TTL: keep the work far
        # shorter than 30 s and this never deletes another request's lock.
        if g.env.CACHE.get(lock) == token:
            g.env.CACHE.delete(lock)
    return {"report": data, "locked": True, "expires_in": expires_in(data)}


# -- Rate limiting --------------------------------------------------------------


def is_rate_limited_seed(ip: str) -> bool:
    """The seed's ``isRateLimited``: one request per IP per second.

    It races: two requests arriving together both read ``None`` and both
    pass, because nothing happens between the ``get`` and the ``set``.
    """
    key = f"ratelimit:{ip}"
    seen = g.env.CACHE.get(key)
    if seen:
        return True
    g.env.CACHE.set(key, "1", ttl=1)  # block repeat requests for 1 second
    return False


@bp.get("/ratelimit/seed")
def rate_limited_seed() -> ResponseReturnValue:
    """The seed's rate limiter: one request per second per IP (racy)."""
    if is_rate_limited_seed(request.remote_addr or "unknown"):
        return {"limited": True}, 429
    return {"limited": False}


def hits_this_window(ip: str) -> int | None:
    """Count a request in the current fixed window; ``None`` if the cache is down.

    ``incr`` adds one and returns the new count in a single atomic step, so
    concurrent requests each get their own number and none slips through.
    Its ``ttl`` applies only when this call creates the key: the first
    request of a window starts the clock, and the count resets when the key
    expires.
    """
    window = current_app.config["RATE_WINDOW"]
    try:
        return int(g.env.CACHE.incr(_window_key(ip), ttl=window))
    except CacheUnavailable:
        return None


def _window_key(ip: str) -> str:
    return f"ratelimit:window:{ip}"


@bp.get("/ratelimit")
def rate_limited() -> ResponseReturnValue:
    """The atomic rate limiter: RATE_LIMIT requests per RATE_WINDOW s per IP."""
    limit = current_app.config["RATE_LIMIT"]
    hits = hits_this_window(request.remote_addr or "unknown")
    # Fail open: an outage of the cache must not lock every user out.
    if hits is not None and hits > limit:
        # The seconds left in this window (the whole window if the cache
        # cannot tell: 0 for a key gone or a cache down).
        ip = request.remote_addr or "unknown"
        retry = g.env.CACHE.ttl(_window_key(ip)) or current_app.config["RATE_WINDOW"]
        return {"limited": True, "hits": hits, "limit": limit}, 429, {"Retry-After": str(retry)}
    return {"limited": False, "hits": hits, "limit": limit}


# -- Short-lived session data: one-time codes -------------------------------------


@bp.post("/otp/<user_id>")
def send_code(user_id: str) -> ResponseReturnValue:
    """Make a one-time code valid for 15 minutes (shown, not sent)."""
    code = f"{secrets.randbelow(10**6):06d}"
    g.env.CACHE.set(f"otp:{user_id}", code, ttl=900)  # valid for 15 minutes
    # A real app sends the code by e-mail or SMS; this one shows it, so you
    # can try the next step. If the cache is down the code is not kept, and
    # the user asks for a new one: fine for data that may be lost.
    return {"sent": True, "code": code}


@bp.post("/otp/<user_id>/verify")
def verify_code(user_id: str) -> ResponseReturnValue:
    """Check a one-time ``code``: valid once, compared in constant time."""
    key = f"otp:{user_id}"
    submitted = request.form.get("code", "")
    stored = g.env.CACHE.get(key)
    # The seed: valid = stored !== null && stored === submittedCode. Two
    # additions: compare in constant time, and make the code one-time.
    # delete() returns True for exactly one caller, so two requests racing
    # with the right code cannot both succeed. (A real app also limits the
    # attempts per code, with incr as in /ratelimit.)
    valid = (
        stored is not None
        and hmac.compare_digest(stored.encode(), submitted.encode())
        and g.env.CACHE.delete(key)
    )
    return {"valid": valid}


# -- Feature flags ------------------------------------------------------------------

#: The flags the page offers; any other ``feature:*`` key shows up too.
KNOWN_FLAGS = ("dark-mode", "new-checkout", "beta-reports")


def is_feature_enabled(feature: str) -> bool:
    """The seed's ``isFeatureEnabled``: only the string ``"true"`` enables."""
    return bool(g.env.STATE.get(f"feature:{feature}") == "true")


def set_feature(feature: str, enabled: bool) -> None:
    g.env.STATE.set(f"feature:{feature}", "true" if enabled else "false")


def all_flags() -> dict[str, bool]:
    """Known flags (off unless set) and every stored one, by name."""
    flags = dict.fromkeys(KNOWN_FLAGS, False)
    for key, value in g.env.STATE.items("feature:"):
        flags[key.removeprefix("feature:")] = value == "true"
    return dict(sorted(flags.items()))


@bp.get("/flags")
def flags() -> ResponseReturnValue:
    """Every feature flag, on or off."""
    return all_flags()


@bp.get("/flags/<feature>")
def flag(feature: str) -> ResponseReturnValue:
    """Whether one feature flag is on."""
    return {"feature": feature, "enabled": is_feature_enabled(feature)}


@bp.post("/flags/<feature>")
def set_flag(feature: str) -> ResponseReturnValue:
    """Turn a feature flag on or off (``enabled``)."""
    enabled = request.form.get("enabled", "").lower() in ("true", "1", "on", "yes")
    set_feature(feature, enabled)
    return {"feature": feature, "enabled": enabled}


# -- Persistent counters -----------------------------------------------------------


def increment_counter_seed(name: str) -> int:
    """The seed's ``incrementCounter``: read, add one, write.

    Loses updates: two workers that read 41 at the same time both write 42.
    """
    current = g.env.STATE.get(f"counter:{name}")
    new_count = int(current) + 1 if current else 1
    g.env.STATE.set(f"counter:{name}", str(new_count))
    return new_count


def increment_counter(name: str) -> int:
    """Add one in the database itself, in one statement: never loses a count."""
    return int(g.env.STATE.incr(f"counter:{name}"))


def counter_values() -> dict[str, int | str]:
    """Every counter by name; a value someone overwrote with text stays text."""
    counters: dict[str, int | str] = {}
    for key, value in g.env.STATE.items("counter:"):
        try:
            counters[key.removeprefix("counter:")] = int(value)
        except ValueError:
            counters[key.removeprefix("counter:")] = value
    return counters


@bp.get("/counters")
def counters() -> ResponseReturnValue:
    """Every counter."""
    return counter_values()


@bp.get("/counters/<name>")
def counter(name: str) -> ResponseReturnValue:
    """One counter's value (0 if never counted)."""
    value = g.env.STATE.get(f"counter:{name}")
    return {"name": name, "value": int(value) if value else 0}


@bp.post("/counters/<name>")
def increment(name: str) -> ResponseReturnValue:
    """Add one to a counter, atomically (``State.incr``)."""
    return {"name": name, "value": increment_counter(name)}


@bp.post("/counters/batch")
async def increment_batch() -> ResponseReturnValue:
    """Add one to each counter of ``?names=a,b,c`` at once, from an ``async def`` view.

    Each ``incr`` runs in a thread of its own (``asyncio.to_thread``); a
    State binding gives every thread a connection of its own.
    """
    names = [n for n in request.args.get("names", "").split(",") if n]
    if not 1 <= len(names) <= 20:
        abort(400, "give 1 to 20 counter names: ?names=a,b,c")
    values = await asyncio.gather(*(asyncio.to_thread(increment_counter, n) for n in names))
    return {"values": dict(zip(names, values))}


@bp.post("/counters/<name>/seed")
def increment_seed(name: str) -> ResponseReturnValue:
    """Add one to a counter the seed's way: read, add, write (loses updates)."""
    return {"name": name, "value": increment_counter_seed(name)}


# -- User preferences (in USER_STATE: a second state binding) ---------------------

DEFAULT_PREFS = {"theme": "light", "language": "en"}
CHOICES = {"theme": ("light", "dark"), "language": ("en", "fr", "de", "es")}


def default_preferences() -> dict[str, str]:
    """The seed's defaults, except that the ``dark-mode`` flag makes dark the default.

    The flag is the site's switch, the preference a user's own choice: a
    user who saved a theme keeps it whatever the flag says.
    """
    theme = "dark" if is_feature_enabled("dark-mode") else DEFAULT_PREFS["theme"]
    return {**DEFAULT_PREFS, "theme": theme}


def stored_preferences(user_id: str) -> dict[str, Any]:
    """The fields *user_id* saved, without the defaults."""
    raw = g.env.USER_STATE.get(f"prefs:{user_id}")
    stored = json.loads(raw) if raw else {}  # not JSON: ValueError, a 400
    if not isinstance(stored, dict):
        raise ValueError(f"prefs:{user_id} holds {raw!r}, not a JSON object")
    return stored


def get_user_preferences(user_id: str) -> dict[str, Any]:
    """The seed's ``getUserPreferences``; stored fields win over the defaults."""
    return {**default_preferences(), **stored_preferences(user_id)}


def set_user_preferences(user_id: str, prefs: dict[str, str]) -> None:
    """The seed's ``setUserPreferences``: replaces the whole object."""
    g.env.USER_STATE.set(f"prefs:{user_id}", json.dumps(prefs))


def update_user_preferences(user_id: str, changes: dict[str, str]) -> dict[str, Any]:
    """Change only the given fields, atomically: ``update`` with ``$set``.

    Two requests changing different fields at once both win; with the
    seed's read, modify, ``set``, the second would undo the first.
    """
    if not changes:  # update() refuses an empty $set: nothing to do
        return get_user_preferences(user_id)
    key = f"prefs:{user_id}"
    # As on Ploy, update() changes an existing document only: create it
    # first if absent (add() never overwrites, so this is safe to race).
    g.env.USER_STATE.add(key, "{}")
    new = g.env.USER_STATE.update(key, {"$set": changes})
    return {**default_preferences(), **json.loads(new or "{}")}


def preference_changes() -> dict[str, str]:
    """The submitted preference fields, checked against :data:`CHOICES`."""
    changes = {}
    for field, allowed in CHOICES.items():
        value = request.form.get(field)
        if value is None or value == "":
            continue
        if value not in allowed:
            abort(400, f"{field} must be one of {', '.join(allowed)}, got {value!r}")
        changes[field] = value
    return changes


@bp.get("/prefs/<user_id>")
def prefs(user_id: str) -> ResponseReturnValue:
    """A user's preferences, defaults filled in."""
    return get_user_preferences(user_id)


@bp.post("/prefs/<user_id>")
def update_prefs(user_id: str) -> ResponseReturnValue:
    """Change some preference fields, atomically (``State.update``)."""
    return update_user_preferences(user_id, preference_changes())


@bp.put("/prefs/<user_id>")
def replace_prefs(user_id: str) -> ResponseReturnValue:
    """Replace all of a user's preferences (the seed's ``setUserPreferences``)."""
    prefs = {**default_preferences(), **preference_changes()}
    set_user_preferences(user_id, prefs)
    return prefs


# -- Multiple bindings --------------------------------------------------------------
# STATE keeps the site config durably; CACHE holds a copy for 60 s so most
# requests skip the database; SESSION_CACHE keeps per-user session data apart
# from everything in CACHE (same server, separate keys).


@bp.get("/config")
def get_config() -> ResponseReturnValue:
    """The site config: from CACHE if there, else from STATE (then cached for 60 s)."""
    value = g.env.CACHE.get("config")
    if value is None:
        value = g.env.STATE.get("config")
        if value is not None:
            g.env.CACHE.set("config", value, ttl=60)
        return {"config": value, "cached": False}
    return {"config": value, "cached": True}


@bp.post("/config")
def set_config() -> ResponseReturnValue:
    """Store the site config in STATE and drop its cached copy."""
    value = request.form.get("value")
    if value is None:
        abort(400, "missing field 'value'")
    g.env.STATE.set("config", value)
    # Drop the cached copy, so the next read sees the new value at once
    # rather than up to 60 s later.
    g.env.CACHE.delete("config")
    return {"config": value}


@bp.post("/sessions/<user_id>")
def set_session(user_id: str) -> ResponseReturnValue:
    """Keep a user's session ``data`` in SESSION_CACHE for an hour."""
    data = request.form.get("data")
    if data is None:
        abort(400, "missing field 'data'")
    g.env.SESSION_CACHE.set(f"user:{user_id}", data, ttl=3600)  # one hour
    return {"success": True}


@bp.get("/sessions/<user_id>")
def get_session(user_id: str) -> ResponseReturnValue:
    """A user's session data from SESSION_CACHE, or null."""
    return {"data": g.env.SESSION_CACHE.get(f"user:{user_id}")}
