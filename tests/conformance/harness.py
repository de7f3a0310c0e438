"""Operation sequences run on Ploy's emulator and on flask-ploy, and their comparison.

A sequence is a list of :class:`Op`. Every write is followed by a *probe*, a
hidden ``get`` of the key it wrote, so each write's effect is compared, not
only what later reads happen to see. Ploy runs a sequence first (one request
per stretch between ``sleep`` steps, see :func:`run_ploy`); flask-ploy then
replays it op by op (:func:`replay`), comparing each outcome with Ploy's.

Outcomes that differ must be explained by one of :data:`RULES`, the allowed
differences; docs/porting.rst has a table with one row per rule (its id in
the first column), and a test checks the two agree. A rule that says
flask-ploy refused a write Ploy made (``diverges``) lets the probe after it
differ too, after which flask-ploy's copy of the key is set to Ploy's value
so the rest of the sequence starts from the same data. Anything unexplained
is a failure.

To add an operation: give it a branch in :meth:`Op.ploy_step` (how the worker
calls the TypeScript binding) and in :func:`call_flask` (how the Python one is
called), a normalisation in :func:`ploy_outcome` if Ploy's answer has another
shape, and a weight in the generator.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Outcome = tuple[str, Any]  # ("ok", value) or ("error", message)


@dataclass(frozen=True)
class Op:
    """One call on a binding: ``binding.name(*args)``."""

    binding: str  # "CACHE" or "STATE"
    name: str  # get, set, get_many, delete, list, pages, update, sleep
    args: tuple[Any, ...]
    probe: bool = False

    @property
    def key(self) -> str | None:
        keyed = ("get", "set", "put", "delete", "update", "get_with_metadata")
        return self.args[0] if self.name in keyed else None

    @property
    def writes(self) -> bool:
        return self.name in ("set", "put", "delete", "update")

    def ploy_step(self) -> list[Any]:
        """The step for the worker: ``[binding, method, *args]``, TypeScript style."""
        b, a = self.binding, self.args
        if self.name == "set" and b == "CACHE":
            key, value, ttl = a
            return [b, "set", key, value] + ([] if ttl is None else [{"ttl": ttl}])
        if self.name == "get_many":
            return [b, "get", list(a[0])]
        if self.name == "put":  # Ploy's options; a TTL long enough never to expire here
            key, value, metadata, ttl = a
            options = {"metadata": metadata, "expirationTtl": ttl}
            return [b, "put", key, value, {k: v for k, v in options.items() if v is not None}]
        if self.name == "get_with_metadata":
            return [b, "getWithMetadata", a[0]]
        if self.name == "list_entries":
            prefix, limit, cursor = a
            options = {"prefix": prefix, "limit": limit, "cursor": cursor}
            return [b, "list", {k: v for k, v in options.items() if v is not None}]
        if self.name in ("list", "pages"):
            prefix, limit, cursor = a
            options = {"prefix": prefix, "limit": limit, "cursor": cursor}
            options = {k: v for k, v in options.items() if v is not None}
            return [b, "list" if self.name == "list" else "__pages__", options]
        return [b, self.name, *a]

    def __str__(self) -> str:
        args = ", ".join(json.dumps(x, ensure_ascii=False) for x in self.args)
        return f"{'(probe) ' if self.probe else ''}{self.binding}.{self.name}({args})"


def probe(op: Op) -> Op:
    return Op(op.binding, "get", (op.args[0],), probe=True)


@dataclass
class Record:
    """What one target answered to one op, and when (``time.monotonic``)."""

    outcome: Outcome
    t0: float
    t1: float


# -- running -----------------------------------------------------------------------------


def ploy_outcome(op: Op, raw: dict[str, Any]) -> Outcome:
    """Ploy's answer, in the shape :func:`call_flask` gives flask-ploy's."""
    if "error" in raw:
        return ("error", raw["error"])
    value = raw["ok"]
    if op.name == "get_many":
        return ("ok", [tuple(pair) for pair in value])
    if op.name == "list":
        cursor = value.get("cursor") or None
        assert value["list_complete"] is (cursor is None), value
        return ("ok", {"keys": [k["name"] for k in value["keys"]], "cursor": cursor})
    if op.name == "pages":
        return ("ok", [{"keys": p["keys"], "cursor": p["cursor"] or None} for p in value])
    if op.name == "get_with_metadata":
        return ("ok", [value["value"], value["metadata"]])
    if op.name == "list_entries":  # the expiry differs by design (whole seconds): not compared
        cursor = value.get("cursor") or None
        keys = [[k["name"], k.get("metadata"), "expiration" in k] for k in value["keys"]]
        return ("ok", {"keys": keys, "cursor": cursor})
    return ("ok", value)


def run_ploy(run: Callable[[list[list[Any]]], list[dict[str, Any]]], seq: list[Op]) -> list[Record]:
    """Run *seq* on the emulator: a request per stretch between sleeps.

    A State sequence starts from an empty store. An op's time is its
    request's (the ops of a request run within it).
    """
    records: list[Record] = []
    batch: list[Op] = []
    reset = any(op.binding == "STATE" for op in seq)

    def flush() -> None:
        nonlocal reset
        if not batch and not reset:
            return
        steps = [op.ploy_step() for op in batch]
        if reset:
            steps.insert(0, ["STATE", "__reset__"])
        t0 = time.monotonic()
        answers = run(steps)
        t1 = time.monotonic()
        if reset:
            assert "ok" in answers[0], answers[0]
            answers = answers[1:]
            reset = False
        records.extend(Record(ploy_outcome(op, a), t0, t1) for op, a in zip(batch, answers))
        batch.clear()

    for op in seq:
        if op.name == "sleep":
            flush()
            time.sleep(op.args[0])
            records.append(Record(("ok", None), time.monotonic(), time.monotonic()))
        else:
            batch.append(op)
    flush()
    return records


def call_flask(env: Any, op: Op) -> Outcome:
    """Call *op* on flask-ploy's binding in ``g.env``; bad arguments become errors."""
    b = getattr(env, op.binding)
    a = op.args
    try:
        if op.name == "set" and op.binding == "CACHE":
            key, value, ttl = a
            value = b.set(key, value) if ttl is None else b.set(key, value, ttl=ttl)
        elif op.name == "get_many":
            value = list(b.get(list(a[0])).items())  # get of a list, as Ploy's
        elif op.name == "put":
            key, value, metadata, ttl = a
            value = b.put(key, value, metadata=metadata, ttl=ttl)
        elif op.name == "get_with_metadata":
            value = list(b.get_with_metadata(a[0]))
        elif op.name == "list_entries":
            prefix, limit, cursor = a
            kwargs: dict[str, Any] = {"cursor": cursor}
            if limit is not None:
                kwargs["limit"] = limit
            page = b.list_entries(prefix or "", **kwargs)
            keys = [[e.key, e.metadata, e.expiration is not None] for e in page.entries]
            value = {"keys": keys, "cursor": page.cursor}
        elif op.name == "list":
            value = _flask_list(b, *a)
        elif op.name == "pages":
            prefix, limit, cursor = a
            value = []
            while len(value) < 1000:
                page = _flask_list(b, prefix, limit, cursor)
                value.append(page)
                cursor = page["cursor"]
                if cursor is None:
                    break
        else:
            value = getattr(b, op.name)(*a)
    except (TypeError, ValueError) as exc:
        return ("error", f"{type(exc).__name__}: {exc}")
    return ("ok", value)


def _flask_list(binding: Any, prefix: str | None, limit: int | None, cursor: str | None) -> Any:
    kwargs: dict[str, Any] = {"cursor": cursor}
    if limit is not None:
        kwargs["limit"] = limit
    page = binding.list(prefix or "", **kwargs)
    return {"keys": list(page.keys), "cursor": page.cursor}


# -- comparing ---------------------------------------------------------------------------


class _Object(list):  # type: ignore[type-arg]
    """A decoded JSON object: its (key, value) pairs, in order."""


def canon(value: Any) -> Any:
    """A decoded JSON value in a form that compares numbers by value
    (``2 == 2.0``), keeps booleans apart from numbers, and objects' key order."""
    if isinstance(value, _Object):
        return ("obj", tuple((k, canon(v)) for k, v in value))
    if isinstance(value, list):
        return ("arr", tuple(canon(v) for v in value))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    assert isinstance(value, (int, float)), value
    return ("num", float(value))


def json_canon(text: Any) -> Any:
    """:func:`canon` of a JSON text, or ``None`` if it is not JSON."""
    if not isinstance(text, str):
        return None
    try:
        return canon(json.loads(text, object_pairs_hook=_Object))
    except ValueError:
        return None


def lookup(text: str | None, path: str) -> Any:
    """The value at an update *path* in the JSON object *text*; ``MISSING`` if none."""
    try:
        node: Any = json.loads(text) if text is not None else MISSING
    except ValueError:
        return MISSING
    for seg in path.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d+\])*)", seg)
        if m is None:
            return MISSING
        parts: list[str | int] = (
            [int(seg)] if seg.isdigit() else [m.group(1), *map(int, re.findall(r"\d+", m.group(2)))]
        )
        for part in parts:
            in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
            if not in_list and not (isinstance(node, dict) and part in node):
                return MISSING
            node = node[part]
    return node


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass
class Context:
    """What the comparison knows while a sequence replays."""

    #: Ploy's value of each key, as last seen (probes follow every write).
    ploy_values: dict[str, str | None] = field(default_factory=dict)
    #: The last cache set of each key: (ttl, value, Ploy's record, flask-ploy's record).
    cache_sets: dict[str, tuple[Any, str, Record, Record]] = field(default_factory=dict)
    #: The records (Ploy's, flask-ploy's) of the op being compared.
    read: tuple[Record, Record] | None = None


@dataclass(frozen=True)
class Rule:
    """An allowed difference. ``matches(op, ploy, flask, context)`` says if it explains one."""

    id: str
    binding: str  # "Cache", "State" or "both"
    matches: Callable[[Op, Outcome, Outcome, Context], bool]
    #: flask-ploy refused (or did otherwise) a write that Ploy made: the probe may differ.
    diverges: bool = False
    #: Whether every run must show it (False for timing-dependent rules).
    always: bool = True


def _flask_error(pattern: str) -> Callable[[Outcome], bool]:
    regex = re.compile(pattern)
    return lambda out: out[0] == "error" and regex.search(out[1]) is not None


def _strict_update(pattern: str) -> Callable[[Op, Outcome, Outcome, Context], bool]:
    """flask-ploy's update raised *pattern* where Ploy's answered (whatever it wrote)."""
    refused = _flask_error(pattern)
    return lambda op, p, f, ctx: op.name == "update" and p[0] == "ok" and refused(f)


def _returns(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    if op.binding != "STATE" or p != ("ok", None) or f[0] != "ok":
        return False
    if op.name == "delete":
        return isinstance(f[1], bool)
    return op.name == "update" and isinstance(f[1], str)


def _values(op: Op, out: Outcome) -> list[Any] | None:
    """The values a read returned, in order; None for other ops or errors."""
    if out[0] != "ok":
        return None
    if op.name == "get":
        return [out[1]]
    if op.name == "get_many":
        return [v for _, v in out[1]]
    return None


def _same_keys(op: Op, p: Outcome, f: Outcome) -> bool:
    return op.name != "get_many" or [k for k, _ in p[1]] == [k for k, _ in f[1]]


def _number_text(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    pv, fv = _values(op, p), _values(op, f)
    if pv is None or fv is None or len(pv) != len(fv) or not _same_keys(op, p, f):
        return False
    return all(
        a == b or (json_canon(a) is not None and json_canon(a) == json_canon(b))
        for a, b in zip(pv, fv)
    )


def _nul(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    pv, fv = _values(op, p), _values(op, f)
    if pv is None or fv is None or len(pv) != len(fv) or not _same_keys(op, p, f):
        return False
    return all(
        a == b or (isinstance(b, str) and "\0" in b and a == b.split("\0")[0])
        for a, b in zip(pv, fv)
    )


def _list_case(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    if op.name not in ("list", "pages", "list_entries") or p[0] != "ok" or f[0] != "ok":
        return False
    prefix = op.args[0] or ""
    if op.name == "list_entries":  # entries are [name, metadata, has an expiry]
        page_p, page_f = p[1], f[1]
        extra = [e for e in page_p["keys"] if not e[0].startswith(prefix)]
        kept = [e for e in page_p["keys"] if e[0].startswith(prefix)]
        if not extra or kept != page_f["keys"][: len(kept)]:
            return False
        return page_p["cursor"] is not None or page_f["cursor"] is None
    pages_p = p[1] if op.name == "pages" else [p[1]]
    pages_f = f[1] if op.name == "pages" else [f[1]]
    if op.name == "pages":
        # Whole listings: the same keys once the case-insensitive extras are dropped.
        keys_p = [k for page in pages_p for k in page["keys"]]
        keys_f = [k for page in pages_f for k in page["keys"]]
        extra = [k for k in keys_p if not k.startswith(prefix)]
        return bool(extra) and [k for k in keys_p if k.startswith(prefix)] == keys_f
    page_p, page_f = pages_p[0], pages_f[0]
    extra = [k for k in page_p["keys"] if not k.startswith(prefix)]
    kept = [k for k in page_p["keys"] if k.startswith(prefix)]
    if not extra or kept != page_f["keys"][: len(kept)]:
        return False
    # Ploy's page is full of extras: flask-ploy's may hold more, and go on.
    return page_p["cursor"] is not None or page_f["cursor"] is None


def _list_limit(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    if op.name not in ("list", "pages", "list_entries") or p[0] != "ok":
        return False
    limit = op.args[1]
    return limit is not None and not 1 <= limit <= 1000 and _flask_error("limit must be")(f)


def _key_rules(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    return p[0] == "ok" and _flask_error(r"key must not be empty|over the limit of")(f)


def _cache_ttl_args(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    return (
        op.binding == "CACHE"
        and op.name == "set"
        and p[0] == "ok"
        and _flask_error(r"ttl must be")(f)
    )


def _ttl_seconds(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    """A cache read near a TTL's end: Ploy's ``ttl=N`` lives N-1 to N s, flask-ploy's N s."""
    if op.binding != "CACHE" or op.name != "get" or p[0] != "ok" or f[0] != "ok":
        return False
    last = ctx.cache_sets.get(op.args[0])
    if last is None or ctx.read is None or not isinstance(last[0], int):
        return False
    ttl, value, set_p, set_f = last
    if {p[1], f[1]} != {None, value}:
        return False
    slack = 0.25

    def near_end(read: Record, wrote: Record) -> bool:
        low, high = read.t0 - wrote.t1, read.t1 - wrote.t0
        return high >= ttl - 1 - slack and low <= ttl + slack

    return near_end(ctx.read[0], set_p) or near_end(ctx.read[1], set_f)


def _pop_empty(op: Op, p: Outcome, f: Outcome, ctx: Context) -> bool:
    """Ploy fails an update whose ``$pop: 1`` meets an empty, missing or null array."""
    if op.name != "update" or p[0] != "error" or f[0] != "ok" or not isinstance(op.args[1], dict):
        return False
    before = ctx.ploy_values.get(op.args[0])
    pops = op.args[1].get("$pop") or {}
    return before is not None and any(
        d == 1 and lookup(before, path) in (MISSING, None, []) for path, d in pops.items()
    )


#: flask-ploy's refusals (ValueError, TypeError) of updates that Ploy answers,
#: by rule id: a pattern of the error, as ``call_flask`` shows it.
_REFUSALS = {
    "update-not-object": r"^ValueError: value of .* is not a JSON object",
    "update-blocked": r"^ValueError: \$(set|inc|push) '.*': cannot reach it",
    "update-past-end": r"^ValueError: \$(set|inc|push) '.*': index \d+ is past the end",
    "update-inc-type": r"^ValueError: \$inc '.*': the current value .* is not a number",
    "update-not-array": r"^ValueError: \$(push|pop) '.*': the current value is .*, not an array$",
    "update-overlap": r"^ValueError: \$\w+ '.*' conflicts with \$\w+ ",
    "update-ops": (
        r"^(ValueError|TypeError): (unknown update operator|update ops must name at least"
        r"|\$\w+ needs a non-empty dict|\$inc .*: amount must be|\$pop .*: operand must be 1)"
    ),
    "update-path": r"^ValueError: \$\w+: path .* is not a name, an index",
}

#: The allowed differences; docs/porting.rst has a row for each id.
RULES: list[Rule] = [
    Rule("returns", "State", _returns),
    Rule("number-text", "State", _number_text),
    Rule("nul", "both", _nul),
    Rule("key-rules", "both", _key_rules, diverges=True),
    Rule("ttl-seconds", "Cache", _ttl_seconds, always=False),
    Rule("ttl-args", "Cache", _cache_ttl_args, diverges=True),
    Rule("list-case", "State", _list_case),
    Rule("list-limit", "State", _list_limit),
    Rule("update-pop-empty", "State", _pop_empty, diverges=True),
    *(Rule(rid, "State", _strict_update(p), diverges=True) for rid, p in _REFUSALS.items()),
]


def explain(op: Op, p: Outcome, f: Outcome, ctx: Context) -> Rule | None:
    for rule in RULES:
        if rule.binding in ("both", op.binding.title()) and rule.matches(op, p, f, ctx):
            return rule
    return None


def same(p: Outcome, f: Outcome) -> bool:
    """Equal outcomes: both errors (messages differ by design), or equal values."""
    if p[0] == "error" or f[0] == "error":
        return p[0] == f[0]
    return bool(p[1] == f[1])


@dataclass
class Report:
    """What a replay found."""

    ops: int = 0
    sequences: int = 0
    used: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def replay(env: Any, seq: list[Op], ploy: list[Record], report: Report, name: str) -> None:
    """Replay *seq* on flask-ploy's ``g.env``; compare each op with Ploy's *ploy* records."""
    ctx = Context()
    report.sequences += 1
    diverged: Rule | None = None
    for i, (op, p_rec) in enumerate(zip(seq, ploy)):
        if op.name == "sleep":
            time.sleep(op.args[0])
            continue
        t0 = time.monotonic()
        f = call_flask(env, op)
        f_rec = Record(f, t0, time.monotonic())
        report.ops += 1
        p = p_rec.outcome
        ctx.read = (p_rec, f_rec)
        rule: Rule | None = None
        if not same(p, f):
            rule = explain(op, p, f, ctx)
            if rule is None and op.probe and diverged is not None:
                rule = diverged
            if rule is None:
                report.failures.append(_failure(name, seq, i, ploy, f))
                if len(report.failures) >= 10:
                    return
            else:
                report.used[rule.id] += 1
        if op.probe and diverged is not None and not same(p, f):
            _resync(env, op, p)
        diverged = rule if op.writes and rule is not None and rule.diverges else None
        key = op.key
        if op.name == "get" and key is not None and p[0] == "ok":
            ctx.ploy_values[key] = p[1]
        if op.binding == "CACHE" and op.name == "set" and key is not None and p[0] == "ok":
            ctx.cache_sets[key] = (op.args[2], op.args[1], p_rec, f_rec)


def _resync(env: Any, op: Op, p: Outcome) -> None:
    """Give flask-ploy Ploy's value of the probed key (after an allowed divergence)."""
    key, value = op.args[0], p[1]
    binding = getattr(env, op.binding)
    try:
        if value is None:
            binding.delete(key)
        elif op.binding == "STATE":  # keep the metadata, as the diverged write did on both
            binding.set(key, value, metadata=binding.get_with_metadata(key).metadata)
        else:
            binding.set(key, value)
    except (TypeError, ValueError):
        pass  # a key flask-ploy refuses (key-rules): it cannot hold it


def _failure(name: str, seq: list[Op], i: int, ploy: list[Record], f: Outcome) -> str:
    lines = [f"{name}, op {i}: {seq[i]}", f"  Ploy:       {ploy[i].outcome}", f"  flask-ploy: {f}"]
    lines.append("  the sequence up to there (Ploy's outcomes):")
    for j in range(max(0, i - 12), i):
        lines.append(f"    {j}: {seq[j]} -> {ploy[j].outcome}")
    return "\n".join(lines)


# -- generating --------------------------------------------------------------------------

STATE_KEYS = [
    "doc", "doc2", "a", "A", "ab", "aB", "Ab", "a%", "a_", "a%b", "a_b", "aXb", "a\\b",
    "é", "É", "éa", "日本", "user:1", "user:10", "user:2", "User:3", "%", "_", "u:ä",
]  # fmt: skip
DOC_KEYS = ["doc", "doc2", "doc3"]
PREFIXES = ["", "a", "A", "a%", "a_", "ab", "user:", "USER:", "User:", "é", "É", "日", "%", "_"]
VALUES = [
    "v", "", "hello world", "ünï ✓ 日本語 🎉", "%_\\", "line\nbreak", '{"a": 1}', "[1,2]",
    "42", "null", '"s"', "x" * 300,
]  # fmt: skip
PATHS = [
    "a", "b", "n", "s", "t", "o", "o.x", "o.y", "o.t", "o.t.0", "t.0", "t.1", "t.2", "t.3",
    "t[0]", "t[1]", "o.t[0]", "n.x", "s.x", "t.0.x", "t.x", "o.0", "x.y.z", "l.0", "l.0.0",
    "a[0][0]", "z",
]  # fmt: skip
AMOUNTS = [1, 2, -1, 5, 0.5, -1.5]


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["int", "int", "str", "bool", "null", "half", "arr", "obj"])
    if depth >= 2 and kind in ("arr", "obj"):
        kind = "int"
    if kind == "int":
        return rng.randint(-3, 9)
    if kind == "half":
        return rng.choice([0.5, -1.5, 2.25])
    if kind == "str":
        return rng.choice(["x", "é", "", "5", "abc"])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "arr":
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return json_object(rng, depth + 1)


def json_object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    names = rng.sample(["a", "b", "n", "t", "o", "s", "x", "l"], rng.randint(0, 4))
    return {n: json_value(rng, depth) for n in names}


def doc_text(rng: random.Random) -> str:
    doc = json_object(rng)
    if rng.random() < 0.7:
        doc.setdefault("t", [rng.randint(0, 9) for _ in range(rng.randint(0, 3))])
        doc.setdefault("o", {"x": 1})
    spaced = rng.random() < 0.2
    return json.dumps(doc, ensure_ascii=False, separators=None if spaced else (",", ":"))


def _parts(path: str) -> list[str]:
    return re.sub(r"\[(\d+)\]", r".\1", path).split(".")


def _overlap(a: str, b: str) -> bool:
    pa, pb = _parts(a), _parts(b)
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def update_doc(rng: random.Random) -> dict[str, Any]:
    """Random operators on random paths; overlapping paths (which flask-ploy
    refuses) in about one update in ten."""
    ops: dict[str, Any] = {}
    chosen: list[str] = []
    for op in rng.sample(["$set", "$unset", "$inc", "$push", "$pop"], rng.randint(1, 3)):
        fields: dict[str, Any] = {}
        for path in rng.sample(PATHS, rng.randint(1, 2)):
            if any(_overlap(path, c) for c in chosen) and rng.random() < 0.9:
                continue
            chosen.append(path)
            if op == "$set" or op == "$push":
                fields[path] = json_value(rng, 1)
            elif op == "$unset":
                fields[path] = rng.choice(["", 1, True])
            elif op == "$inc":
                fields[path] = rng.choice(AMOUNTS)
            else:
                fields[path] = rng.choice([1, -1])
        if fields:
            ops[op] = fields
    return ops


def with_probes(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for op in ops:
        out.append(op)
        if op.writes:
            out.append(probe(op))
    return out


def state_sequence(rng: random.Random, length: int) -> list[Op]:
    ops: list[Op] = []
    for _ in range(length):
        r = rng.random()
        key = rng.choice(DOC_KEYS if rng.random() < 0.5 else STATE_KEYS)
        if r < 0.2:
            value = doc_text(rng) if key in DOC_KEYS or rng.random() < 0.3 else rng.choice(VALUES)
            ops.append(Op("STATE", "set", (key, value)))
        elif r < 0.3:
            ops.append(Op("STATE", "get", (key,)))
        elif r < 0.35:
            keys = [rng.choice(STATE_KEYS + DOC_KEYS) for _ in range(rng.randint(1, 4))]
            ops.append(Op("STATE", "get_many", (tuple(keys),)))
        elif r < 0.42:
            ops.append(Op("STATE", "delete", (key,)))
        elif r < 0.5:
            cursor = rng.choice([None, None, rng.choice(STATE_KEYS), "a%"])
            limit = rng.choice([None, 1, 2, 3, 5])
            ops.append(Op("STATE", "list", (rng.choice(PREFIXES), limit, cursor)))
        elif r < 0.55:
            ops.append(Op("STATE", "pages", (rng.choice(PREFIXES), rng.choice([1, 2, 3]), None)))
        elif r < 0.6:  # Ploy's put options (@meetploy/types 1.18)
            metadata = rng.choice([None, {"n": rng.randint(0, 9)}, {"tags": ["a", "é"]}])
            ttl = rng.choice([None, 3600])
            ops.append(Op("STATE", "put", (key, rng.choice(VALUES), metadata, ttl)))
        elif r < 0.64:
            ops.append(Op("STATE", "get_with_metadata", (key,)))
        elif r < 0.67:  # Ploy's list, with each key's metadata and expiry
            cursor = rng.choice([None, None, rng.choice(STATE_KEYS)])
            limit = rng.choice([None, 1, 2, 3, 5])
            ops.append(Op("STATE", "list_entries", (rng.choice(PREFIXES), limit, cursor)))
        else:
            key = rng.choice(DOC_KEYS) if rng.random() < 0.85 else key
            ops.append(Op("STATE", "update", (key, update_doc(rng))))
    return with_probes(ops)


CACHE_KEYS = ["k", "K", "k%", "k_", "é", "日本", "a:b", "x"]


def cache_sequence(rng: random.Random, length: int, ns: str) -> list[Op]:
    ops: list[Op] = []
    for _ in range(length):
        key = ns + rng.choice(CACHE_KEYS)
        if rng.random() < 0.5:
            ttl = rng.choice([None, None, None, 1, 2, 5, 60, 3600])
            ops.append(Op("CACHE", "set", (key, rng.choice(VALUES), ttl)))
        else:
            ops.append(Op("CACHE", "get", (key,)))
    return with_probes(ops)


# -- edge cases, deliberately -----------------------------------------------------------


def S(name: str, *args: Any) -> Op:
    return Op("STATE", name, args)


def state_edges() -> Iterator[list[Op]]:
    """Fixed sequences for the edge cases of issue 14 and every State rule."""
    doc = '{"t":[1,2],"o":{"x":1},"n":5,"s":"str","z":null,"b":true,"e":[]}'
    yield with_probes([  # update on a missing key, update returns
        S("update", "nope", {"$set": {"a": 1}}),
        S("set", "d", "{}"),
        S("update", "d", {"$set": {"a": 1}}),
        S("delete", "d"),
        S("delete", "d"),
    ])  # fmt: skip
    yield with_probes([  # numeric path segments, a[0], index at and past the end
        S("set", "d", doc),
        S("update", "d", {"$set": {"t.1": 9}}),
        S("update", "d", {"$set": {"t.2": 7}}),
        S("update", "d", {"$set": {"t.5": 7}}),
        S("update", "d", {"$set": {"t[0]": "a"}}),
        S("update", "d", {"$set": {"a[0]": 3}}),
        S("update", "d", {"$set": {"a[0]": 4, "a[1]": 5}}),
        S("update", "d", {"$set": {"m[1]": 3}}),
        S("update", "d", {"$set": {"m.0.k": 3}}),
        S("update", "d", {"$set": {"o.0": 1}}),
        S("update", "d", {"$set": {"0": 1}}),
        S("update", "d", {"$inc": {"t.0": 1}}),
        S("update", "d", {"$inc": {"t.4": 1}}),
        S("update", "d", {"$unset": {"t.0": 1}}),
        S("update", "d", {"$unset": {"t.9": 1}}),
        S("update", "d", {"$push": {"t.3": 1}}),
        S("update", "d", {"$push": {"t.3": 2}}),
        S("update", "d", {"$set": {"t.01": "lead"}}),
    ])  # fmt: skip
    yield with_probes([  # operator order: fixed, whatever the document's
        S("set", "d", '{"u":0}'),
        S("update", "d", {"$pop": {"q": -1}, "$push": {"p": 1}, "$inc": {"i": 1},
                          "$unset": {"u": ""}, "$set": {"s": 1}}),
        S("update", "d", {"$push": {"p2": 1}, "$set": {"s2": 1}}),
        S("update", "d", {"$set": {"b": 1, "a": 2}}),
    ])  # fmt: skip
    yield with_probes([  # paths through non-objects
        S("set", "d", doc),
        S("update", "d", {"$set": {"n.x": 1}}),
        S("update", "d", {"$set": {"z.x": 1}}),
        S("update", "d", {"$set": {"t.x": 1}}),
        S("update", "d", {"$set": {"s.0": 1}}),
        S("update", "d", {"$unset": {"n.x": 1, "z.y": 1, "o.0": 1}}),
        S("update", "d", {"$inc": {"n.x": 1}}),
        S("update", "d", {"$push": {"n.x": 1}}),
        S("update", "d", {"$pop": {"n.x": -1}}),
        S("update", "d", {"$pop": {"n.x": 1}}),
    ])  # fmt: skip
    yield with_probes([  # $inc on missing, null and non-numbers; $push/$pop on non-arrays
        S("set", "d", doc),
        S("update", "d", {"$inc": {"new": 2}}),
        S("update", "d", {"$inc": {"z": 2}}),
        S("update", "d", {"$inc": {"n": 0.5}}),
        S("update", "d", {"$inc": {"s": 1}}),
        S("update", "d", {"$inc": {"b": 1}}),
        S("update", "d", {"$inc": {"o": 1}}),
        S("set", "d", doc),
        S("update", "d", {"$push": {"n": 1}}),
        S("update", "d", {"$push": {"z": 1}}),
        S("update", "d", {"$push": {"o": 1}}),
        S("update", "d", {"$pop": {"n": -1}}),
        S("update", "d", {"$pop": {"o": 1}}),
    ])  # fmt: skip
    yield with_probes([  # $pop on empty, missing and null arrays
        S("set", "d", doc),
        S("update", "d", {"$pop": {"e": 1}}),
        S("update", "d", {"$pop": {"e": -1}}),
        S("update", "d", {"$pop": {"missing": 1}}),
        S("update", "d", {"$pop": {"missing": -1}}),
        S("update", "d", {"$pop": {"z": 1}}),
        S("update", "d", {"$pop": {"z": -1}}),
        S("update", "d", {"$pop": {"e": 1}, "$set": {"also": 1}}),
        S("update", "d", {"$pop": {"t": 1}}),
        S("update", "d", {"$pop": {"t": -1}}),
        S("update", "d", {"$pop": {"t": -1}}),
        S("update", "d", {"$pop": {"t": 1}}),
    ])  # fmt: skip
    yield with_probes([  # overlapping paths, malformed operators and paths
        S("set", "d", doc),
        S("update", "d", {"$set": {"n": 1}, "$inc": {"n": 1}}),
        S("update", "d", {"$set": {"o.x": 1, "o": {"y": 2}}}),
        S("update", "d", {"$unset": {"t.0": 1}, "$inc": {"t.1": 1}}),
        S("update", "d", {"$set": {"t[0]": 5}, "$inc": {"t.0": 1}}),
        S("update", "d", {}),
        S("update", "d", {"$rename": {"n": "m"}}),
        S("update", "d", {"$set": {}}),
        S("update", "d", {"$inc": {"n": "1"}}),
        S("update", "d", {"$pop": {"t": 2}}),
        S("update", "d", {"$set": {'"q"': 1}}),
        S("update", "d", {"$set": {"a]b": 1}}),
        S("update", "d", {"$set": {"t[#]": 1}}),
        S("update", "d", {"$set": {"a..b": 1}}),
        S("update", "d", {"$set": {"a[x]": 1}}),
    ])  # fmt: skip
    yield with_probes([  # values that are not JSON objects
        S("set", "arr", "[1,2]"),
        S("update", "arr", {"$set": {"0": 5}}),
        S("update", "arr", {"$set": {"a": 5}}),
        S("set", "num", "5"),
        S("update", "num", {"$set": {"a": 1}}),
        S("set", "txt", "plain text"),
        S("update", "txt", {"$set": {"a": 1}}),
        S("set", "nul", '{"a":"x\\u0000y"}'),
        S("update", "nul", {"$set": {"b": 1}}),
    ])  # fmt: skip
    keys = ["a%b", "a_b", "aXb", "A%b", "a%", "A_", "ab", "AB", "é1", "É2", "日本", "a\\b", "b"]
    yield with_probes(
        [S("set", k, f"v{i}") for i, k in enumerate(keys)]
        + [S("list", p, None, None) for p in ["a%", "a_", "A", "a", "é", "É", "日", "\\", "a\\"]]
        + [S("pages", p, 1, None) for p in ["a", "A", "A%", "a_"]]
        + [S("list", "a", 2, "A_"), S("list", "", 3, "aXb"), S("list", "b", 1, "a")]
        + [S("list", "", 0, None), S("list", "", 1001, None), S("pages", "", 0, None)]
        + [S("get_many", ("a%b", "nope", "a%b", "日本", "AB")), S("get_many", ())]
    )
    yield with_probes([  # keys flask-ploy refuses; NUL
        S("set", "", "empty key"),
        S("get", ""),
        S("get_many", ("", "x")),
        S("delete", ""),
        S("set", "nul", "a\0b"),
        S("get_many", ("nul",)),
    ])  # fmt: skip


def C(name: str, *args: Any) -> Op:
    return Op("CACHE", name, args)


def cache_edges(ns: str) -> Iterator[list[Op]]:
    """Fixed sequences for the Cache rules, TTL expiry included (about 2.5 s of sleeps)."""
    yield with_probes([
        C("set", ns + "zero", "v", 0),
        C("set", ns + "neg", "v", -1),
        C("set", ns + "frac", "v", 1.5),
        C("set", "", "empty key", None),
        C("get", ""),
        C("set", ns + "nul", "a\0b", None),
        C("get", ns + "nul"),
    ])  # fmt: skip
    keys = {"t1": 1, "t2": 2, "t5": 5, "none": None, "t3600": 3600}
    yield with_probes([C("set", ns + k, f"v-{k}", ttl) for k, ttl in keys.items()]) + [
        C("sleep", 1.2),
        *(C("get", ns + k) for k in keys),
        C("sleep", 1.0),
        *(C("get", ns + k) for k in keys),
    ]
