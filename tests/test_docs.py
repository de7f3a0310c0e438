"""Every code block of the docs runs here, so the docs cannot drift from the code.

Every ``.rst`` page under docs/ is found by itself (a new page needs no change
here), and README.md's fenced blocks are treated the same way. Per block language:

``python`` (also ``py``, ``python3``, ``pycon``; ``.. code-block::``, ``.. code::``,
``.. sourcecode::``, ``.. testcode::``, and bare ``::`` literal blocks, which
Sphinx highlights as Python unless a ``.. highlight::`` directive says otherwise)
    Executed. The blocks of one page run in order in one namespace, so a later
    block uses what an earlier one defined. The namespace starts with ``app`` (a
    Flask app with FlaskPloy on a memory:// cache and SQLite state in a temporary
    folder; bindings CACHE, SESSION_CACHE, STATE and USER_STATE), ``ploy``, ``g``,
    ``request`` and ``current_app``, inside a request context of ``app``. The
    working directory is a temporary folder with a ``ploy.yaml`` of those
    bindings, so ``app = Flask(__name__); FlaskPloy(app)`` in a block finds one,
    and puts its SQLite file in ./instance.

    A block whose first line starts with ``>>>`` (and every ``.. doctest::``) is
    a doctest in the same namespace: printed results and tracebacks are compared
    (ELLIPSIS and NORMALIZE_WHITESPACE on), so error messages in the docs are the
    real ones.

``yaml``
    Parsed with flask-ploy's loader (safe, refuses duplicate keys); a document
    with a ``cache`` or ``state`` key is validated by Ploy's rules
    (:func:`flask_ploy.config.validate`). Show invalid files as doctests instead.

``console``, ``sh``, ``shell``, ``bash``
    Not run: they start servers, need a shell, or write files. Decided: every
    ``flask ... ploy ...`` command in them is checked against the real click
    commands instead: the subcommands must exist, every option must be one the
    command has (with a valid choice), and the number of arguments must fit.
    In ``console`` blocks only lines starting with ``$`` are commands.

Anything else (text, typescript, ini, ...) is shown, not run.

Escape hatch, to keep rare: a reST comment ``.. not-tested: <reason>`` as the
last thing before a block skips it. The reason is required.
"""

from __future__ import annotations

import ast
import doctest
import os
import re
import shlex
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from flask import Flask, current_app, g, request

import flask_ploy.cache
import flask_ploy.state
from flask_ploy import FlaskPloy
from flask_ploy.cli import ploy_cli
from flask_ploy.config import DEFAULTS, parse_yaml, validate

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)

PLOY_YAML = """\
kind: dynamic
cache:
  CACHE: default
  SESSION_CACHE: sessions
state:
  STATE: default
  USER_STATE: users
"""

PYTHON = {"python", "py", "python3", "pycon", "default"}
SHELL = {"console", "sh", "shell", "bash", "shell-session"}


@dataclass
class Block:
    """One code block of a page."""

    lang: str  # python, doctest, yaml, shell, console, or whatever the page says
    code: str
    line: int  # 1-based line of the block's first code line in its file
    skip: str | None = None  # the reason given by ``.. not-tested:``


# -- extraction --------------------------------------------------------------------

_DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\.\s+(?P<name>code-block|code|sourcecode|testcode|testsetup|doctest)::"
    r"\s*(?P<lang>\S*)\s*$"
)
_HIGHLIGHT = re.compile(r"^\s*\.\.\s+highlight::\s*(\S+)\s*$")
_SKIP = re.compile(r"^\s*\.\.\s+not-tested:(?P<reason>.*)$")
_OPTION = re.compile(r"^\s*:[\w-]+:")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _body(lines: list[str], start: int, min_indent: int) -> tuple[int, int, str]:
    """The indented block from *start*: (first code line index, end index, code)."""
    i = start
    while i < len(lines) and (not lines[i].strip() or _OPTION.match(lines[i])):
        if lines[i].strip() and _indent(lines[i]) <= min_indent:
            break
        i += 1
    first = i
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > min_indent):
        i += 1
    return first, i, textwrap.dedent("\n".join(lines[first:i])).strip("\n") + "\n"


def rst_blocks(text: str) -> list[Block]:
    """The code blocks of a reST page, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    default = "python"
    previous = ""  # the last non-blank line before the current one
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _DIRECTIVE.match(line)
        literal = (
            m is None
            and line.rstrip().endswith("::")
            and not line.lstrip().startswith("..")
            and i + 1 < len(lines)
        )
        if m is None and not literal:
            h = _HIGHLIGHT.match(line)
            if h:
                default = h.group(1)
            if line.strip():
                previous = line
            i += 1
            continue
        skip = _SKIP.match(previous)
        reason = skip.group("reason").strip() if skip else None
        if skip and not reason:
            raise AssertionError(f"line {i}: '.. not-tested:' needs a reason after the colon")
        if m is not None:
            name = m.group("name")
            lang = {"doctest": "doctest", "testcode": "python", "testsetup": "python"}.get(
                name, m.group("lang").lower() or default
            )
            first, end, code = _body(lines, i + 1, _indent(line))
        else:
            lang = default
            first, end, code = _body(lines, i + 1, _indent(line))
        if code.strip():
            if lang in PYTHON and code.lstrip().startswith(">>>"):
                lang = "doctest"
            elif lang in PYTHON:
                lang = "python"
            blocks.append(Block(lang, code, first + 1, reason))
        previous = lines[end - 1] if end > 0 else ""
        i = max(end, i + 1)
    return blocks


_FENCE = re.compile(r"^```(\w*)\s*$")


def markdown_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown file (README.md)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i + 1
        i = start
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        lang = m.group(1).lower() or "text"
        code = "\n".join(lines[start:i]) + "\n"
        if lang in PYTHON:
            lang = "doctest" if code.lstrip().startswith(">>>") else "python"
        blocks.append(Block(lang, code, start + 1))
        i += 1
    return blocks


# -- checking shell commands -------------------------------------------------------

_FLASK_VALUE_OPTIONS = {"--app", "-A", "--env-file", "-e"}


def _commands(block: Block) -> Iterator[list[str]]:
    """The ``flask ... ploy ...`` commands of a shell block, as argument lists."""
    text = block.code.replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.strip()
        if block.lang == "console":
            if not line.startswith("$"):
                continue
            line = line[1:].strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\$\([^)]*\)", "X", line)  # $(date +%F) is one word's part
        for part in re.split(r"\s*(?:&&|\|\||[|;])\s*", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError as exc:
                raise AssertionError(f"cannot split {part!r}: {exc}") from None
            cut = next((n for n, w in enumerate(words) if w[:1] in "<>" or w[:2] == "2>"), None)
            words = words[:cut]
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words.pop(0)  # VAR=value before the command
            if not words or os.path.basename(words[0]) != "flask":
                continue
            args = words[1:]
            while args and args[0].startswith("-"):
                option = args.pop(0)
                if option in _FLASK_VALUE_OPTIONS and args:
                    args.pop(0)
            if args and args[0] == "ploy":
                yield args


def check_ploy_command(args: list[str]) -> None:
    """Check ``ploy ...`` *args* against the real click commands."""
    command: click.Command = ploy_cli
    path = ["flask", args[0]]
    rest = args[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, (
            f"{' '.join(path)} has no command {rest[0]!r}; it has {sorted(command.commands)}"
        )
        command, path, rest = sub, [*path, rest[0]], rest[1:]
    where = " ".join(path)
    options: dict[str, click.Option] = {}
    arguments: list[click.Argument] = []
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                options[name] = param
        elif isinstance(param, click.Argument):
            arguments.append(param)
    positional: list[str] = []
    while rest:
        word = rest.pop(0)
        if word == "--":
            positional += rest
            break
        if not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        if word == "--help":
            continue
        name, eq, value = word.partition("=")
        option = options.get(name)
        assert option is not None, f"{where} has no option {name}; it has {sorted(options)}"
        if option.is_flag or option.count:
            assert not eq, f"{where} {name} takes no value"
            continue
        if not eq:
            assert rest, f"{where} {name} needs a value"
            value = rest.pop(0)
        if isinstance(option.type, click.Choice):
            assert value in option.type.choices, (
                f"{where} {name}: {value!r} is not one of {list(option.type.choices)}"
            )
    low = sum(a.nargs for a in arguments if a.required and a.nargs > 0)
    high = None if any(a.nargs < 0 for a in arguments) else sum(a.nargs for a in arguments)
    count = len(positional)
    wanted = str(low) if high == low else f"{low} to {'any number of' if high is None else high}"
    assert count >= low and (high is None or count <= high), (
        f"{where} takes {wanted} arguments, got {count}: {positional}"
    )


# -- running a page ------------------------------------------------------------------


def _run_doctest(block: Block, ns: dict[str, Any], name: str) -> None:
    parser = doctest.DocTestParser()
    # A name per block: a function defined in one doctest may fail in another.
    test = parser.get_doctest(block.code, ns, f"{name}:{block.line}", name, block.line - 1)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    ns.update(test.globs)  # DocTest ran on a copy: keep what it defined
    if runner.failures:
        raise AssertionError(f"doctest at {name}, line {block.line}:\n" + "".join(report))


def run_blocks(blocks: list[Block], name: str, ns: dict[str, Any]) -> dict[str, int]:
    """Run or check every block of one page; return counts by what happened."""
    counts = {"executed": 0, "doctest": 0, "yaml": 0, "commands": 0, "skipped": 0, "shown": 0}
    for block in blocks:
        if block.skip:
            counts["skipped"] += 1
            continue
        where = f"{name}, line {block.line}"
        if block.lang == "python":
            # Pad so tracebacks give the line in the page itself.
            code = compile("\n" * (block.line - 1) + block.code, name, "exec")
            try:
                exec(code, ns)  # noqa: S102 - our own docs
            except Exception as exc:
                raise AssertionError(
                    f"the python block at {where} raised {type(exc).__name__}: {exc}"
                ) from exc
            counts["executed"] += 1
        elif block.lang == "doctest":
            _run_doctest(block, ns, name)
            counts["doctest"] += 1
        elif block.lang == "yaml":
            doc = parse_yaml(block.code, where)
            if isinstance(doc, dict) and ("cache" in doc or "state" in doc):
                validate(doc, where)
            counts["yaml"] += 1
        elif block.lang in SHELL:
            for args in _commands(block):
                try:
                    check_ploy_command(args)
                except AssertionError as exc:
                    raise AssertionError(f"{where}: flask {' '.join(args)}: {exc}") from None
                counts["commands"] += 1
        else:
            counts["shown"] += 1
    return counts


@pytest.fixture
def docs_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The namespace a page's blocks start from (see the module docstring)."""
    for key in list(os.environ):
        if key.startswith("PLOY_"):
            monkeypatch.delenv(key)
    (tmp_path / "ploy.yaml").write_text(PLOY_YAML)
    monkeypatch.chdir(tmp_path)
    schemes = dict(flask_ploy.cache.SCHEMES)
    engines = flask_ploy.state.engine.tracked()

    # Remember every app the page's blocks give a FlaskPloy, to close its pools.
    made: list[tuple[FlaskPloy, Flask]] = []
    init_app = FlaskPloy.init_app

    def recording_init_app(self: FlaskPloy, app: Flask) -> None:
        init_app(self, app)
        made.append((self, app))

    monkeypatch.setattr(FlaskPloy, "init_app", recording_init_app)
    app = Flask("docs_app", root_path=str(tmp_path), instance_path=str(tmp_path / "instance"))
    app.config["TESTING"] = True
    ploy = FlaskPloy(app)
    ns: dict[str, Any] = {
        "__name__": "docs_page",  # not importable: Flask(__name__) roots at the cwd
        "app": app,
        "ploy": ploy,
        "g": g,
        "request": request,
        "current_app": current_app,
    }
    try:
        with app.test_request_context("/"):
            yield ns
    finally:
        for ext, made_app in made:
            ext.app_bindings(made_app).close()
        for engine in flask_ploy.state.engine.tracked() - engines:
            engine.dispose()  # Flask-SQLAlchemy's, used through db=
        flask_ploy.cache.SCHEMES.clear()
        flask_ploy.cache.SCHEMES.update(schemes)


#: What each page at least runs or checks, so a block that silently stops
#: running (a changed directive, an extractor bug) fails. Pages not listed
#: have no code. Raise a number when you add blocks.
PAGE_MINIMUMS: dict[str, dict[str, int]] = {
    "api.rst": {"executed": 1, "doctest": 4},
    "cli.rst": {"executed": 1, "doctest": 1, "commands": 3},
    "config.rst": {"executed": 3, "doctest": 2},
    "deployment.rst": {"executed": 9, "commands": 3},
    "observability.rst": {"executed": 3, "doctest": 2, "commands": 2},
    "ploy-yaml.rst": {"executed": 3, "doctest": 9, "yaml": 1, "commands": 2},
    "porting.rst": {"executed": 24, "doctest": 4, "yaml": 4, "commands": 1},
    "quickstart.rst": {"executed": 5, "doctest": 1, "yaml": 1, "commands": 2},
    "testing.rst": {"executed": 3},
    "transactions.rst": {"executed": 2, "doctest": 3},
}
#: Blocks a page may skip (``.. not-tested:`` with a reason), at most.
PAGE_SKIPS = {"cli.rst": 1, "deployment.rst": 1, "testing.rst": 1}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_docs_page(page: Path, docs_env: dict[str, Any]) -> None:
    blocks = rst_blocks(page.read_text(encoding="utf-8"))
    counts = run_blocks(blocks, f"docs/{page.relative_to(DOCS)}", docs_env)
    minimums = PAGE_MINIMUMS.get(page.name, {})
    short = {k: counts[k] for k, n in minimums.items() if counts[k] < n}
    assert not short, f"{page.name}: ran {counts}, expected at least {minimums}"
    assert counts["skipped"] <= PAGE_SKIPS.get(page.name, 0), counts


def test_readme(docs_env: dict[str, Any]) -> None:
    blocks = markdown_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    counts = run_blocks(blocks, "README.md", docs_env)
    assert counts["executed"] >= 1 and counts["yaml"] >= 1
    # The README's view works as written (its block made a new ``app``).
    client = docs_env["app"].test_client()
    assert client.get("/hello").json == {"cached": "hello", "user": "alice"}


def test_config_page_documents_every_setting() -> None:
    """docs/config.rst has a ``.. data::`` entry per PLOY_* key, with its default."""
    text = (DOCS / "config.rst").read_text(encoding="utf-8")
    entries = re.findall(r"^\.\. data:: (PLOY_\w+)\n(.*?)(?=^\.\. data::|\Z)", text, re.M | re.S)
    documented = {name: body for name, body in entries}
    assert sorted(documented) == sorted(DEFAULTS)
    for name, body in documented.items():
        m = re.search(r"Default: ``(.+?)``", body)
        assert m, f"docs/config.rst: {name} gives no 'Default: ``...``'"
        assert ast.literal_eval(m.group(1)) == DEFAULTS[name], name


# -- the extractor itself --------------------------------------------------------------

SAMPLE = """\
Title
=====

Some text::

    x = 1

.. code-block:: python
   :caption: with an option

   y = x + 1

.. code-block:: yaml

    cache:
      CACHE: default

.. not-tested: needs a real Sentinel

.. code-block:: python

    raise RuntimeError("never run")

- A list item with a literal block::

      z = y * 2

.. highlight:: text

Not Python::

    this is not python

.. code-block:: python

    >>> z
    4

.. code-block:: console

    $ flask --app example_app ploy state dump STATE -o backup.jsonl
    $ PLOY_X=1 flask ploy state list STATE --prefix user: | head
    output line, not a command
"""


def test_extractor_finds_every_kind_of_block() -> None:
    blocks = rst_blocks(SAMPLE)
    assert [(b.lang, b.line, b.skip) for b in blocks] == [
        ("python", 6, None),
        ("python", 11, None),
        ("yaml", 15, None),
        ("python", 22, "needs a real Sentinel"),
        ("python", 26, None),
        ("text", 32, None),
        ("doctest", 36, None),
        ("console", 41, None),
    ]
    assert blocks[1].code == "y = x + 1\n"
    ns: dict[str, Any] = {}
    counts = run_blocks(blocks, "sample.rst", ns)
    assert ns["z"] == 4
    assert counts == {
        "executed": 3,
        "doctest": 1,
        "yaml": 1,
        "commands": 2,
        "skipped": 1,
        "shown": 1,
    }


def test_extractor_reports_failures() -> None:
    with pytest.raises(AssertionError, match="needs a reason"):
        rst_blocks(".. not-tested:\n\n.. code-block:: python\n\n    pass\n")
    with pytest.raises(AssertionError, match=r"sample.rst, line 3 raised NameError"):
        run_blocks(rst_blocks("Code::\n\n    undefined_name\n"), "sample.rst", {})
    with pytest.raises(AssertionError, match="doctest at s, line 3"):
        run_blocks(rst_blocks(".. code-block:: python\n\n    >>> 1 + 1\n    3\n"), "s", {})
    with pytest.raises(Exception, match="binding name must match"):
        run_blocks(rst_blocks(".. code-block:: yaml\n\n    cache:\n      cache: x\n"), "s", {})
    bad = [
        ("ploy nosuch", "has no command 'nosuch'"),
        ("ploy state dump STATE --nope", "has no option --nope"),
        ("ploy state dump STATE --format xml", "'xml' is not one of"),
        ("ploy state get STATE", "takes 2 arguments, got 1"),
    ]
    for command, message in bad:
        block = Block("console", f"$ flask {command}\n", 1)
        with pytest.raises(AssertionError, match=re.escape(message)):
            run_blocks([block], "s", {})
