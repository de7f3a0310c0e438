"""Nothing in the package deserialises code: no pickle, marshal, eval or exec,
and YAML is only ever read with a SafeLoader subclass.

``make lint`` enforces it with ruff's bandit rules (S301 pickle, S302
marshal, S307 eval, S102 exec, S506 unsafe ``yaml.load``) and the banned
APIs of ``ruff.toml`` (pickle-like modules, yaml's unsafe loaders). These
tests check that the project's ruff configuration catches every such
construct and allows the safe ones, and that config.py's one ``yaml.load``
(``noqa: S506``) uses a loader derived from ``yaml.SafeLoader``.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import servers

ROOT = Path(__file__).resolve().parent.parent
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")

BAD_SNIPPETS = [
    "import pickle\n",
    "import pickle as p\n",
    "from pickle import loads\n",
    "import dill\n",
    "import marshal\n",
    "import shelve\n",
    "from _pickle import loads\n",
    "x = eval('1')\n",
    "exec('x = 1')\n",
    "import yaml\nyaml.load(s)\n",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)\n",
    "import yaml\nyaml.load(s, Loader=yaml.FullLoader)\n",
    "import yaml\nyaml.load(s, yaml.UnsafeLoader)\n",
    "import yaml\nyaml.unsafe_load(s)\n",
    "import yaml\nyaml.full_load(s)\n",
    "import yaml\nclass L(yaml.Loader): ...\n",
    "from yaml import FullLoader\n",
]

GOOD_SNIPPETS = [
    "import yaml\nyaml.safe_load(s)\n",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)\n",
    "'''We never use pickle, eval( or exec( here.'''\n# import pickle\n",
    "import json\njson.loads(s)\n",
    "x.evaluate('1')\nobj.exec_driver_sql('SELECT 1')\n",
]


def _ruff_findings(snippet: str, tmp_path: Path) -> str:
    servers.need(RUFF is not None, "ruff (pip install -e '.[lint]')")
    assert RUFF is not None
    path = tmp_path / "snippet.py"
    path.write_text("s = ''\n" + snippet)
    done = subprocess.run(
        [RUFF, "check", "--config", str(ROOT / "ruff.toml"), "--select", "S,TID251",
         "--output-format", "concise", "--no-cache", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout if done.returncode else ""


@pytest.mark.parametrize("snippet", BAD_SNIPPETS)
def test_the_lint_configuration_catches(snippet: str, tmp_path: Path) -> None:
    assert _ruff_findings(snippet, tmp_path), f"ruff.toml lets this through: {snippet!r}"


@pytest.mark.parametrize("snippet", GOOD_SNIPPETS)
def test_the_lint_configuration_allows(snippet: str, tmp_path: Path) -> None:
    assert _ruff_findings(snippet, tmp_path) == ""


def test_config_reads_yaml_through_a_safeloader_subclass() -> None:
    """The one ``yaml.load`` in the package is config/yamlfile.py's, with ``_Loader``."""
    loads = [
        (path.name, node)
        for path in sorted((ROOT / "flask_ploy").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("yaml.load", "load")
    ]
    assert [name for name, _ in loads] == ["yamlfile.py"]
    loader = next(kw.value for kw in loads[0][1].keywords if kw.arg == "Loader")
    tree = ast.parse((ROOT / "flask_ploy" / "config" / "yamlfile.py").read_text(encoding="utf-8"))
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    name = ast.unparse(loader)
    while name in classes:  # follow the bases up to yaml's own class
        name = ast.unparse(classes[name].bases[0])
    assert name == "yaml.SafeLoader"
