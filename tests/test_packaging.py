"""The sdist: built from this checkout, it carries the docs, CHANGES, LICENSE
and a test suite that works (every test module imports from the unpacked
sdist alone), its metadata passes ``twine check``, and it holds no local
junk (databases, byte code, built docs).

The build uses this virtualenv's setuptools (``--no-isolation``), so the test
needs no network and takes a few seconds; ``make dist`` builds both the sdist
and the wheel in an isolated environment, as a release does.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from . import servers

ROOT = Path(__file__).resolve().parent.parent

#: Files a user or a packager expects in the sdist.
REQUIRED = [
    "PKG-INFO",
    "LICENSE",
    "CHANGES.rst",
    "README.md",
    "setup.cfg",
    "pyproject.toml",
    "tox.ini",  # the [pytest] settings the tests run with
    "flask_ploy/py.typed",
    "docs/index.rst",
    "docs/conf.py",
    "docs/_static/example-page.png",
    "tests/conftest.py",
    "tests/servers.py",
    "example_app/templates/index.html",
    "example_app/ploy.yaml",
    "bench/results/results.json",
]
#: Folders whose every file in git must be in the sdist: the tests read them.
SHIPPED = ("flask_ploy/", "tests/", "docs/", "example_app/", "bench/")
#: What must never be shipped, however the checkout looks.
JUNK = ("__pycache__/", ".pyc", ".sqlite3", "/instance/", "/docs/_build/", "/.venv/")


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _git_files(*options: str) -> list[str] | None:
    """``git ls-files`` of this checkout, or ``None`` outside a git checkout."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        return None
    done = subprocess.run([git, "ls-files", *options], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.splitlines() if done.returncode == 0 else None


def _source_copy(dest: Path) -> Path:
    """The checkout as a fresh clone would have it, plus files not yet added.

    Building in place would read the ``*.egg-info/SOURCES.txt`` an earlier
    build left, and ship what that listed whatever MANIFEST.in says.
    """
    files = _git_files("--cached", "--others", "--exclude-standard")
    if files is None:  # an unpacked sdist: copy it as it is
        ignore = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", "build")
        shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)
        return dest
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Build the sdist once; return its path and its file names (without the top folder)."""
    servers.need(_installed("build"), "the build package (pip install -e '.[test]')")
    source = _source_copy(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("*.tar.gz")
    with tarfile.open(path) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()]
    return path, names


def test_sdist_has_docs_changes_license_and_tests(sdist: tuple[Path, list[str]]) -> None:
    _, names = sdist
    missing = [n for n in REQUIRED if n not in names]
    assert missing == [], f"not in the sdist: {missing}"
    assert any(n.startswith("docs/") and n.endswith(".rst") for n in names)
    junk = [n for n in names if any(j in "/" + n for j in JUNK)]
    assert junk == [], f"junk in the sdist: {junk}"


def test_sdist_has_every_tracked_file_the_tests_read(sdist: tuple[Path, list[str]]) -> None:
    tracked = _git_files()
    if tracked is None:
        pytest.skip("not a git checkout: nothing to compare the sdist with")
    _, names = sdist
    wanted = [f for f in tracked if f.startswith(SHIPPED) and (ROOT / f).exists()]
    assert len(wanted) > 50
    assert sorted(set(wanted) - set(names)) == []


@pytest.mark.slow
def test_sdist_test_suite_collects(sdist: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Every test module of the unpacked sdist imports: nothing they need is left out."""
    path, names = sdist
    with tarfile.open(path) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+
            tar.extractall(tmp_path, filter="data")
        else:  # pragma: no cover - an sdist we just built
            tar.extractall(tmp_path)  # noqa: S202
    (top,) = tmp_path.iterdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=top,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    modules = {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}
    test_files = {
        n
        for n in names
        if n.startswith("tests/") and n.rpartition("/")[2].startswith("test_") and n.endswith(".py")
    }
    assert modules == test_files


def test_metadata_passes_twine_check(sdist: tuple[Path, list[str]]) -> None:
    servers.need(_installed("twine"), "twine (pip install -e '.[test]')")
    path, _ = sdist
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout


def test_metadata_names_urls_and_python_versions(sdist: tuple[Path, list[str]]) -> None:
    path, _ = sdist
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.count("/") == 1 and
                      m.name.endswith("/PKG-INFO"))  # fmt: skip
        extracted = tar.extractfile(member)
        assert extracted is not None
        pkg_info = extracted.read().decode()
    urls = {line.split(": ", 1)[1].split(",")[0] for line in pkg_info.splitlines()
            if line.startswith("Project-URL: ")}  # fmt: skip
    assert {"Documentation", "Changes", "Source", "Issue Tracker"} <= urls
    for minor in (10, 11, 12, 13):
        assert f"Classifier: Programming Language :: Python :: 3.{minor}\n" in pkg_info
    assert "Requires-Python: >=3.10" in pkg_info
