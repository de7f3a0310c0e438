"""The page a person looks at: State and Cache side by side, with forms.

The State panels (counters, feature flags, preferences) post forms that
change State and redirect back to the page (POST, redirect, GET), so
reloading never submits a form twice. The Cache panel calls the app's
JSON endpoints from a few lines of JavaScript and shows their answers: a
cached report with hit or miss and its time to live counting down, the
rate limiter, and a one-time code. The page ends with an index of every
endpoint of the app, read from its URL map.

CSRF: the forms carry no token, to keep the example short. Instead, every
write (any method but GET, HEAD and OPTIONS) that a browser marks as coming
from another site or origin (the ``Sec-Fetch-Site`` request header, sent by
every current browser) is refused with a 403. Clients that send no such
header (curl, the test client, a load tester) are not browsers, and a
cross-site request forgery needs a browser. A real app with logins and
cookies adds a token as well (Flask-WTF's ``CSRFProtect``), for older
browsers.
"""

from __future__ import annotations

import os
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from . import patterns

bp = Blueprint("page", __name__)

#: The report the Cache panel shows.
REPORT_ID = "daily"

#: ``Sec-Fetch-Site`` values a write is accepted with: the page itself, or a
#: person typing the URL. ``same-site`` is refused too: another port of the
#: same host is the same site.
SAFE_ORIGINS = ("same-origin", "none")


@bp.before_app_request
def refuse_cross_site_writes() -> None:
    """A 403 for a browser's write request that another site or origin started."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in SAFE_ORIGINS:
        abort(403, f"refused a {request.method} from another site (Sec-Fetch-Site: {site})")


def _user() -> str:
    return (request.values.get("user") or "alice").strip()[:64] or "alice"


def endpoints() -> list[dict[str, Any]]:
    """Every route of the app, from its URL map: the page's index.

    Each entry has the ``rule``, its ``methods``, the ``endpoint``, the first
    line of the view's docstring as ``doc`` (split on reST's double
    backquotes: every second part is code), and an example ``link`` for a GET
    route whose arguments all have an example value (else ``None``).
    """
    examples = {
        "report_id": REPORT_ID,
        "user_id": _user(),
        "feature": "dark-mode",
        "name": "visits",
    }
    entries = []
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        view = current_app.view_functions[rule.endpoint]
        first_line = (view.__doc__ or "").strip().split("\n", 1)[0]
        doc = first_line.split("``") if first_line else []
        link = None
        if "GET" in methods and rule.arguments.issubset(examples):
            link = url_for(rule.endpoint, **{a: examples[a] for a in rule.arguments})
        entries.append(
            dict(rule=rule.rule, methods=methods, endpoint=rule.endpoint, doc=doc, link=link)
        )
    return sorted(entries, key=lambda e: (e["rule"], e["methods"]))


@bp.get("/")
def index() -> ResponseReturnValue:
    """This page: State and Cache panels, and this index."""
    user = _user()
    ploy = current_app.extensions["ploy"]
    report = patterns.cached_report(REPORT_ID)  # only a peek: never computes it
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
        stored_prefs=patterns.stored_preferences(user),
        choices=patterns.CHOICES,
        report_id=REPORT_ID,
        report=report,
        report_ttl=patterns.report_ttl(),
        report_expires_in=patterns.expires_in(report) if report else None,
        rate_limit=current_app.config["RATE_LIMIT"],
        rate_window=current_app.config["RATE_WINDOW"],
        endpoints=endpoints(),
    )


@bp.post("/page/counters")
def increment() -> ResponseReturnValue:
    """The page's counter form: add one, then back to the page."""
    name = request.form.get("name", "").strip() or "visits"
    value = patterns.increment_counter(name)
    flash(f"Counter {name} is now {value}.")
    return redirect(url_for(".index", user=_user()), 303)


@bp.post("/page/flags")
def toggle_flag() -> ResponseReturnValue:
    """The page's flag buttons: turn a flag on or off, then back to the page."""
    feature = request.form.get("feature", "").strip()
    if feature:
        enabled = request.form.get("enabled") == "true"
        patterns.set_feature(feature, enabled)
        flash(f"Feature {feature} is now {'on' if enabled else 'off'}.")
    return redirect(url_for(".index", user=_user()), 303)


@bp.post("/page/prefs")
def save_prefs() -> ResponseReturnValue:
    """The page's preferences form: save them, then back to the page."""
    user = _user()
    prefs = patterns.update_user_preferences(user, patterns.preference_changes())
    flash(f"Saved the preferences of {user}: {prefs['theme']}, {prefs['language']}.")
    return redirect(url_for(".index", user=user), 303)
