"""The page a person looks at: counters, flags and preferences, with forms.

Each form posts, changes State, and redirects back to the page (POST,
redirect, GET), so reloading never submits a form twice. A real app would
also protect the forms against CSRF (Flask-WTF's ``CSRFProtect``); that is
left out to keep the example short.
"""

from __future__ import annotations

import os

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from . import patterns

bp = Blueprint("page", __name__)


def _user() -> str:
    return (request.values.get("user") or "alice").strip()[:64] or "alice"


@bp.get("/")
def index() -> ResponseReturnValue:
    user = _user()
    ploy = current_app.extensions["ploy"]
    return render_template(
        "index.html",
        user=user,
        pid=os.getpid(),
        # The reprs show each binding's server with any password masked.
        bindings=[(name, repr(getattr(g.env, name))) for name in g.env],
        cache_stats=ploy.cache_stats(),
        counters=patterns.counter_values(),
        flags=patterns.all_flags(),
        prefs=patterns.get_user_preferences(user),
        choices=patterns.CHOICES,
    )


@bp.post("/page/counters")
def increment() -> ResponseReturnValue:
    name = request.form.get("name", "").strip() or "visits"
    value = patterns.increment_counter(name)
    flash(f"Counter {name} is now {value}.")
    return redirect(url_for(".index", user=_user()), 303)


@bp.post("/page/flags")
def toggle_flag() -> ResponseReturnValue:
    feature = request.form.get("feature", "").strip()
    if feature:
        enabled = request.form.get("enabled") == "true"
        patterns.set_feature(feature, enabled)
        flash(f"Feature {feature} is now {'on' if enabled else 'off'}.")
    return redirect(url_for(".index", user=_user()), 303)


@bp.post("/page/prefs")
def save_prefs() -> ResponseReturnValue:
    user = _user()
    prefs = patterns.update_user_preferences(user, patterns.preference_changes())
    flash(f"Saved the preferences of {user}: {prefs['theme']}, {prefs['language']}.")
    return redirect(url_for(".index", user=user), 303)
