"""``State.update`` with Ploy's semantics, on every database, without the emulator.

Each expected document below is what Ploy's emulator stores for the same
update (its ``buildUpdateExpression`` nests SQLite ``json_set`` /
``json_remove`` / ``json_insert`` calls over ``'$.' + path``; checked with the
SQLite that Node 22 bundles, 3.54). The conformance suite compares the same
cases with the emulator itself; these run everywhere. Refusals are the
allowed differences of docs/porting.rst: flask-ploy raises where Ploy would
silently write nothing or corrupt the value.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

DOC = '{"t":[1,2],"o":{"x":1},"n":5,"s":"str","z":null,"e":[]}'


@pytest.mark.parametrize(
    ("ops", "want"),
    [
        # numeric segments address array elements; at the length they append
        ({"$set": {"t.1": 9}}, {"t": [1, 9]}),
        ({"$set": {"t.2": 7}}, {"t": [1, 2, 7]}),
        ({"$set": {"t.01": 7}}, {"t": [1, 7]}),
        # name[i] is the same as name.i; missing arrays and objects are created
        ({"$set": {"t[0]": "a"}}, {"t": ["a", 2]}),
        ({"$set": {"a[0]": 3}}, {"a": [3]}),
        ({"$set": {"a[0][0]": 3}}, {"a": [[3]]}),
        ({"$set": {"m.0.k": 3}}, {"m": [{"k": 3}]}),
        ({"$set": {"t.2.k": 3}}, {"t": [1, 2, {"k": 3}]}),
        ({"$set": {"x.y.z": 1}}, {"x": {"y": {"z": 1}}}),
        # $unset removes an element (the rest move up); nothing to remove: no-op
        ({"$unset": {"t.0": ""}}, {"t": [2]}),
        ({"$unset": {"t.9": "", "n.x": "", "z.y": "", "o.0": "", "q": ""}}, {}),
        # $inc: missing and null count as 0; at the length it appends
        ({"$inc": {"n": 2, "z": 2, "new": 1}}, {"n": 7, "z": 2, "new": 1}),
        ({"$inc": {"t.0": 0.5, "t.2": 1}}, {"t": [1.5, 2, 1]}),
        # $push appends, creating the array; at the length it appends an array
        ({"$push": {"t": 3, "e": [1]}}, {"t": [1, 2, 3], "e": [[1]]}),
        ({"$push": {"t.2": 3}}, {"t": [1, 2, [3]]}),
        ({"$push": {"q.r": 1}}, {"q": {"r": [1]}}),
        # $pop: 1 the last, -1 the first; empty, missing or null: nothing
        ({"$pop": {"t": 1}}, {"t": [1]}),
        ({"$pop": {"t": -1}}, {"t": [2]}),
        ({"$pop": {"e": -1, "z": -1, "q": -1, "n.x": -1, "o.0": -1}}, {}),
        # (Ploy's emulator fails this update instead: the update-pop-empty difference)
        ({"$pop": {"e": 1, "z": 1, "q": 1, "n.x": 1, "o.0": 1}}, {}),
    ],
)
def test_update_like_ploy(state_env: Any, ops: dict[str, Any], want: dict[str, Any]) -> None:
    s = state_env.STATE
    s.set("doc", DOC)
    expected = {**json.loads(DOC), **want}
    for path in ops.get("$unset", {}):
        expected.pop(path, None)
    s.update("doc", ops)
    assert json.loads(s.get("doc")) == expected


def test_operators_apply_in_ploys_order(state_env: Any) -> None:
    """$set, $unset, $inc, $push, $pop, whatever the order given: new keys show it."""
    s = state_env.STATE
    s.set("doc", '{"u":0}')
    s.update(
        "doc",
        {
            "$pop": {"q": -1},
            "$push": {"p": 1},
            "$inc": {"i": 1},
            "$unset": {"u": ""},
            "$set": {"s": 1},
        },
    )
    assert s.get("doc") == '{"s":1,"i":1,"p":[1]}'
    s.update("doc", {"$set": {"b": 1, "a": 2}})  # within one operator: as given
    assert s.get("doc") == '{"s":1,"i":1,"p":[1],"b":1,"a":2}'


def test_update_of_a_missing_key_writes_nothing(state_env: Any) -> None:
    """As on Ploy: the document is not created (create it with set or add)."""
    s = state_env.STATE
    assert s.update("nope", {"$set": {"a": 1}}) is None
    assert s.get("nope") is None


@pytest.mark.parametrize(
    ("ops", "match"),
    [
        ({"$set": {"t.5": 1}}, r"index 5 is past the end of 't' \(length 2\)"),
        ({"$inc": {"a.1": 1}}, r"index 1 is past the end of 'a' \(length 0\)"),
        ({"$set": {"n.x": 1}}, r"cannot reach it: 'n' is not an object \(it is a number\)"),
        ({"$set": {"z.x": 1}}, r"'z' is not an object \(it is null\)"),
        ({"$set": {"t.x": 1}}, r"'t' is not an object \(it is an array\)"),
        ({"$push": {"o.0": 1}}, r"'o' is an object, not an array, so the index 0"),
        ({"$set": {"0": 1}}, r"the document is an object, not an array"),
        ({"$inc": {"s": 1}}, r"the current value 'str' is not a number"),
        ({"$push": {"z": 1}}, r"\$push 'z': the current value is null, not an array"),
        ({"$pop": {"o": 1}}, r"\$pop 'o': the current value is an object, not an array"),
        ({"$unset": {"t.0": ""}, "$inc": {"t.1": 1}}, r"\$inc 't.1' conflicts with \$unset"),
        ({"$set": {"t[0]": 1}, "$inc": {"t.0": 1}}, r"\$inc 't.0' conflicts with \$set 't\[0\]'"),
        ({"$set": {'"q"': 1}}, r"segment '\"q\"' is not a name, an index"),
        ({"$set": {"t[#]": 1}}, r"is not a name, an index"),
        ({"$set": {"a]b": 1}}, r"is not a name, an index"),
    ],
)
def test_refused_where_ploy_would_drop_or_corrupt(
    state_env: Any, ops: dict[str, Any], match: str
) -> None:
    s = state_env.STATE
    s.set("doc", DOC)
    with pytest.raises(ValueError, match=match):
        s.update("doc", ops)
    assert s.get("doc") == DOC
