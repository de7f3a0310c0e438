"""Nothing in the package deserialises code: no pickle, marshal, eval or exec,
and YAML is only ever read with a SafeLoader (or a subclass of one).

The check walks the AST of every module in ``flask_ploy/`` rather than
grepping text, so comments and docstrings that mention pickle (to say it is
not used) do not count, and ``yaml.load(..., Loader=_Loader)`` is accepted
only when ``_Loader`` is a class in the same module derived from
``yaml.SafeLoader``/``yaml.CSafeLoader``. The checker is tested on bad
snippets too, so it can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_ploy"

#: Modules whose import alone is a finding.
BANNED_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "jsonpickle",
}
#: Builtins that run or build code from data.
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}
#: yaml functions that construct arbitrary Python objects.
BANNED_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
BANNED_CALL_NAMES = (
    BANNED_CALLS | {f"builtins.{c}" for c in BANNED_CALLS} | {f"yaml.{f}" for f in BANNED_YAML}
)
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
SAFE_NAMES = SAFE_LOADERS | {f"yaml.{s}" for s in SAFE_LOADERS}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _safe_loader_classes(tree: ast.Module) -> set[str]:
    """Classes of the module derived (transitively) from a safe YAML loader."""
    safe: set[str] = set()
    changed = True
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    while changed:
        changed = False
        for cls in classes:
            if cls.name in safe:
                continue
            bases = {_dotted(base) for base in cls.bases}
            if bases & (SAFE_NAMES | safe):
                safe.add(cls.name)
                changed = True
    return safe


def findings(source: str, filename: str = "<test>") -> list[str]:
    """Every unsafe construct in *source*, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    safe_loaders = _safe_loader_classes(tree)
    out: list[str] = []

    def report(node: ast.AST, what: str) -> None:
        out.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in BANNED_MODULES:
                    report(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in BANNED_MODULES:
                report(node, f"from {node.module} import ...")
            if module == "yaml":
                for alias in node.names:
                    if alias.name in BANNED_YAML | {
                        "load",
                        "load_all",
                        "Loader",
                        "FullLoader",
                        "UnsafeLoader",
                    }:
                        report(node, f"from yaml import {alias.name}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in BANNED_CALL_NAMES:
                report(node, f"call to {name}()")
            elif name in ("yaml.load", "yaml.load_all"):
                loader = next((kw.value for kw in node.keywords if kw.arg == "Loader"), None)
                if loader is None and len(node.args) > 1:
                    loader = node.args[1]
                lname = _dotted(loader) if loader is not None else ""
                ok = lname in SAFE_NAMES or lname in safe_loaders
                if not ok:
                    report(node, f"{name}() with Loader={lname or '(none)'}, not a SafeLoader")
        elif isinstance(node, ast.Attribute) and _dotted(node) in {
            "yaml.Loader",
            "yaml.FullLoader",
            "yaml.UnsafeLoader",
            "yaml.CLoader",
            "yaml.CFullLoader",
            "yaml.CUnsafeLoader",
        }:
            report(node, f"use of {_dotted(node)}")
    return out


def package_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 8, f"expected the package's modules under {PACKAGE}, found {files}"
    return files


def test_the_package_never_unpickles_evals_or_loads_unsafe_yaml() -> None:
    problems: list[str] = []
    for path in package_files():
        problems += findings(
            path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent))
        )
    assert not problems, "\n".join(problems)


def test_config_reads_yaml_through_a_safeloader_subclass() -> None:
    """The one ``yaml.load`` in the package is config.py's, with ``_Loader``."""
    source = (PACKAGE / "config.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    calls = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func) == "yaml.load"
    ]
    assert len(calls) == 1
    assert "_Loader" in _safe_loader_classes(tree)


BAD_SNIPPETS = [
    "import pickle\n",
    "import pickle as p\n",
    "from pickle import loads\n",
    "import marshal\n",
    "import shelve\n",
    "from _pickle import loads\n",
    "x = eval('1')\n",
    "exec('x = 1')\n",
    "builtins.eval('1')\n",
    "c = compile('1', 'f', 'eval')\n",
    "m = __import__('os')\n",
    "import yaml\nyaml.load(s)\n",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)\n",
    "import yaml\nyaml.load(s, Loader=yaml.FullLoader)\n",
    "import yaml\nyaml.load(s, yaml.UnsafeLoader)\n",
    "import yaml\nyaml.unsafe_load(s)\n",
    "import yaml\nyaml.full_load(s)\n",
    "import yaml\nclass L(yaml.Loader): pass\nyaml.load(s, Loader=L)\n",
    "import yaml\nclass L(yaml.FullLoader): pass\nyaml.load_all(s, Loader=L)\n",
    "from yaml import load\nload(s)\n",
]

GOOD_SNIPPETS = [
    "import yaml\nyaml.safe_load(s)\n",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)\n",
    "import yaml\nclass L(yaml.SafeLoader): pass\nclass M(L): pass\nyaml.load(s, Loader=M)\n",
    "'''We never use pickle, eval( or exec( here.'''\n# import pickle\n",
    "import json\njson.loads(s)\n",
    "x.evaluate('1')\nobj.exec_driver_sql('SELECT 1')\n",
]


@pytest.mark.parametrize("snippet", BAD_SNIPPETS)
def test_the_checker_catches(snippet: str) -> None:
    assert findings(snippet), f"the checker missed: {snippet!r}"


@pytest.mark.parametrize("snippet", GOOD_SNIPPETS)
def test_the_checker_allows(snippet: str) -> None:
    assert findings(snippet) == []
