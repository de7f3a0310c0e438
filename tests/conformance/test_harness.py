"""The comparison itself: it must fail on differences that no rule allows.

No emulator here: Ploy's records are written by hand, and flask-ploy (memory://
and SQLite) answers for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import g

from .harness import Op, Record, Report, json_canon, lookup, replay, with_probes


def ok(value: Any = None) -> Record:
    return Record(("ok", value), 0.0, 0.0)


def err(message: str = "Internal Server Error") -> Record:
    return Record(("error", message), 0.0, 0.0)


@pytest.fixture
def env(make_app: Any) -> Iterator[Any]:
    app = make_app()
    with app.app_context():
        g.env.STATE.clear()
        yield g.env
        g.env.STATE.clear()
        g.env.CACHE.clear()


def run(env: Any, seq: list[Op], ploy: list[Record]) -> Report:
    report = Report()
    replay(env, seq, ploy, report, "test")
    return report


DOC = '{"a":1}'


def test_same_answers_pass(env: Any) -> None:
    seq = with_probes([Op("STATE", "set", ("k", DOC)), Op("STATE", "get_many", (("k", "x"),))])
    report = run(env, seq, [ok(), ok(DOC), ok([("k", DOC), ("x", None)])])
    assert report.failures == [] and report.ops == 3 and not report.used


@pytest.mark.parametrize(
    ("ploy_value", "rule"),
    [
        ('{"a":1.0}', "number-text"),  # numbers by value
        ('{"a":1}', None),
        ('{"a":true}', "FAIL"),  # a boolean is not a number
        ('{"a":"1"}', "FAIL"),
        ('{"a":1,"b":2}', "FAIL"),
        ("a", "FAIL"),  # two texts that are not JSON are not equal for that
        (None, "FAIL"),  # Ploy has no such key: flask-ploy wrote what it must not
    ],
)
def test_a_probe_must_match(env: Any, ploy_value: str | None, rule: str | None) -> None:
    seq = with_probes([Op("STATE", "set", ("k", DOC))])
    report = run(env, seq, [ok(), ok(ploy_value)])
    if rule == "FAIL":
        assert len(report.failures) == 1 and "(probe) STATE.get" in report.failures[0]
    else:
        assert report.failures == []
        assert list(report.used) == ([rule] if rule else [])


def test_key_order_counts(env: Any) -> None:
    """Operator order shows in the stored key order, so the order is compared."""
    env.STATE.set("k", "{}")
    seq = with_probes([Op("STATE", "update", ("k", {"$push": {"p": 1}, "$set": {"s": 1}}))])
    assert run(env, seq, [ok(), ok('{"s":1,"p":[1]}')]).failures == []
    env.STATE.set("k", "{}")
    assert len(run(env, seq, [ok(), ok('{"p":[1],"s":1}')]).failures) == 1


def test_errors_on_one_side_only_fail(env: Any) -> None:
    seq = [Op("STATE", "get", ("k",))]
    assert len(run(env, seq, [err()]).failures) == 1
    # flask-ploy refuses an empty key where Ploy answers: an allowed difference...
    seq = [Op("STATE", "get", ("",))]
    report = run(env, seq, [ok(None)])
    assert report.failures == [] and list(report.used) == ["key-rules"]
    # ...but not a refusal with another message.
    seq = [Op("STATE", "list", ("", 5, None))]
    assert len(run(env, seq, [err()]).failures) == 1


def test_a_refused_write_lets_its_probe_differ_and_resyncs(env: Any) -> None:
    env.STATE.set("k", '{"n":"5x"}')
    seq = with_probes([Op("STATE", "update", ("k", {"$inc": {"n": 1}}))])
    seq.append(Op("STATE", "get", ("k",)))
    report = run(env, seq, [ok(), ok('{"n":6.0}'), ok('{"n":6.0}')])
    assert report.failures == [] and report.used["update-inc-type"] == 2
    assert env.STATE.get("k") == '{"n":6.0}'  # Ploy's value, for what follows


def test_a_write_that_is_only_returned_differently_does_not_excuse_its_probe(env: Any) -> None:
    """update returns the new value where Ploy returns nothing: allowed, but the
    data must still agree."""
    env.STATE.set("k", "{}")
    seq = with_probes([Op("STATE", "update", ("k", {"$set": {"a": 1}}))])
    report = run(env, seq, [ok(), ok("{}")])
    assert report.used["returns"] == 1 and len(report.failures) == 1


def test_list_case_extras_must_not_hide_missing_keys(env: Any) -> None:
    env.STATE.set_many({"a1": "v", "a2": "v", "A0": "v"})
    seq = [Op("STATE", "list", ("a", 2, None))]
    # Ploy's LIKE also matched A0; the rest must be flask-ploy's first keys.
    good = {"keys": ["A0", "a1"], "cursor": "a1"}
    report = run(env, seq, [ok(good)])
    assert report.failures == [] and list(report.used) == ["list-case"]
    bad = {"keys": ["A0", "a2"], "cursor": "a2"}
    assert len(run(env, seq, [ok(bad)]).failures) == 1
    seq = [Op("STATE", "pages", ("a", 1, None))]
    pages = [{"keys": [k], "cursor": k} for k in ("A0", "a1")] + [{"keys": ["a2"], "cursor": None}]
    assert run(env, seq, [ok(pages)]).failures == []
    pages[2]["keys"] = ["a3"]
    assert len(run(env, seq, [ok(pages)]).failures) == 1


def test_pop_empty_only_for_an_empty_array(env: Any) -> None:
    seq = with_probes(
        [
            Op("STATE", "set", ("k", '{"e":[],"t":[1]}')),
            Op("STATE", "update", ("k", {"$pop": {"e": 1}})),
        ]
    )
    doc = '{"e":[],"t":[1]}'
    report = run(env, seq, [ok(), ok(doc), err(), ok(doc)])
    assert report.failures == [] and report.used["update-pop-empty"] == 1
    seq[2] = Op("STATE", "update", ("k", {"$pop": {"t": 1}}))
    assert run(env, seq, [ok(), ok(doc), err(), ok(doc)]).failures != []


def test_cache_ttl_tolerance_is_a_window(env: Any) -> None:
    """A read may differ only near the end of the TTL, and only by the value being gone."""
    seq = with_probes([Op("CACHE", "set", ("k", "v", 2))])
    seq.append(Op("CACHE", "get", ("k",)))
    # Ploy read it 1.5 s after the set (between N-1 and N): gone is allowed.
    ploy = [ok(), ok("v"), Record(("ok", None), 1.5, 1.5)]
    report = run(env, seq, ploy)
    assert report.failures == [] and list(report.used) == ["ttl-seconds"]
    # At once, it must be there.
    ploy = [ok(), ok("v"), Record(("ok", None), 0.1, 0.1)]
    assert len(run(env, seq, ploy).failures) == 1


def test_helpers() -> None:
    assert json_canon('{"a":[1,2.0,true]}') == json_canon('{"a": [1.0, 2, true]}')
    assert json_canon('{"a":1,"b":2}') != json_canon('{"b":2,"a":1}')
    assert json_canon('{"a":1}') != json_canon('{"a":true}')
    assert json_canon("not json") is None
    doc = json.dumps({"t": [1, {"x": [5]}], "o": {"k": None}})
    assert lookup(doc, "t.1.x[0]") == 5
    assert lookup(doc, "t[1].x.0") == 5
    assert lookup(doc, "o.k") is None
    assert repr(lookup(doc, "t.2")) == repr(lookup(doc, "o.k.z")) == "MISSING"
