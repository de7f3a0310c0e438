"""A State writer process for the SQLite fault tests (``python -m tests.sqlite_writer``).

It writes through a real Flask app with FlaskPloy, one app context per
operation (as one request would), and prints one line per acknowledged
write to stdout, flushed *after* the call returned:

- ``set KEY VALUE_LEN``: ``STATE.set(KEY, value)`` returned;
- ``incr N``: ``STATE.incr("counter")`` returned N;
- ``update N``: ``STATE.update(doc, {"$inc": {"n": 1}})`` returned n = N;
- ``error TYPE MESSAGE``: an operation raised (the soak counts these).

A parent that kills the process with SIGKILL knows every write it was told
about was acknowledged; a write in flight is never reported.

Usage: ``python -m tests.sqlite_writer URL WRITER_ID TAG [SECONDS]``: with
SECONDS, stop after that long and print ``done OPS``; without, run until
killed.
"""

from __future__ import annotations

import hashlib
import sys
import time

from flask import Flask, g

from flask_ploy import FlaskPloy


def value_for(key: str, size: int) -> str:
    """The value written under *key*: checkable without storing it anywhere."""
    seed = hashlib.sha256(key.encode()).hexdigest()
    return (seed * (size // len(seed) + 1))[:size]


def main(argv: list[str]) -> int:
    url, writer, tag = argv[0], argv[1], argv[2]
    seconds = float(argv[3]) if len(argv) > 3 else None
    app = Flask(f"writer{writer}")
    app.config["PLOY_BINDINGS"] = {"state": {"STATE": "default"}}
    app.config["PLOY_STATE_URL"] = url
    FlaskPloy(app)
    out = sys.stdout
    print("ready", flush=True)
    deadline = time.monotonic() + seconds if seconds else None
    i = ops = 0
    while deadline is None or time.monotonic() < deadline:
        i += 1
        key = f"{tag}:w{writer}:{i}"
        size = 10 + (i * 7919) % 3000
        step = i % 4
        try:
            with app.app_context():
                state = g.env.STATE
                if step == 0:
                    n = state.incr("counter")
                    line = f"incr {n}"
                elif step == 1:
                    state.add(f"doc:w{writer}", "{}")
                    doc = state.update(f"doc:w{writer}", {"$inc": {"n": 1}, "$set": {"last": i}})
                    line = f"update {doc}"
                elif step == 2:
                    state.set_many(
                        {key: value_for(key, size), key + ":b": value_for(key + ":b", 5)}
                    )
                    line = f"set {key} {size}\nset {key}:b 5"
                else:
                    state.set(key, value_for(key, size))
                    line = f"set {key} {size}"
        except Exception as exc:  # reported to the parent, which decides
            line = f"error {type(exc).__name__} {str(exc).splitlines()[0] if str(exc) else ''}"
        out.write(line + "\n")
        out.flush()
        ops += 1
    print(f"done {ops}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
