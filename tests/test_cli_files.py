"""``flask ploy`` and the files it reads and writes: leading whitespace in a
dump, ``-o`` onto symlinks, FIFOs and new files, and the summary of a dump to
standard output."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, g

from .conftest import AppFactory
from .test_cli import APP_MODULE, MEASURE, contents, flask, records, run, write_yaml

# -- leading whitespace ------------------------------------------------------------------


def _load_measured(tmp_path: Path, path: Path) -> tuple[subprocess.CompletedProcess[bytes], float]:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    write_yaml(tmp_path / "ploy.yaml")
    (tmp_path / "measure.py").write_text(MEASURE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "measure.py", "--app", "cliapp", "ploy", "state", "load", "STATE",
         str(path), "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds, not wall time: a loaded machine's scheduling is not the load's cost.
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return done, cpu


def _baseline(tmp_path: Path) -> tuple[float, float]:
    """CPU seconds and peak MiB of loading a one-record file in a new process."""
    small = tmp_path / "small.jsonl"
    small.write_bytes(b'{"key": "a", "value": "1"}\n')
    done, seconds = _load_measured(tmp_path, small)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return seconds, int(done.stderr.decode().rsplit("maxrss", 1)[1].split()[0]) / 1024


FIRST = {"jsonl": b'{"key": "a", "value": "1"}\n', "json": b'[{"key": "a", "value": "1"}]\n'}


@pytest.mark.parametrize(("fmt", "first"), FIRST.items())
def test_leading_whitespace_is_skipped_in_linear_time_and_flat_memory(
    tmp_path: Path, fmt: str, first: bytes
) -> None:
    """20 MB of blanks before the first record used to take 10 s and 260 MB
    (the head was re-joined and stripped for every 64 KiB read)."""
    base_seconds, base_mib = _baseline(tmp_path)
    path = tmp_path / f"blank.{fmt}"
    with open(path, "wb") as f:
        for _ in range(20):
            f.write((b" " * 511 + b"\n") * 2048)  # 1 MiB, 2048 lines
        f.write(first)
    done, seconds = _load_measured(tmp_path, path)
    err = done.stderr.decode()
    assert done.returncode == 0, err[-2000:]
    assert b"Dry run: read 1 key" in done.stdout
    peak_mib = int(err.rsplit("maxrss", 1)[1].split()[0]) / 1024
    assert seconds - base_seconds < 1, f"{seconds:.1f} s against {base_seconds:.1f} s"
    assert peak_mib - base_mib < 10, f"peak {peak_mib:.0f} MiB against {base_mib:.0f} MiB"


def test_leading_whitespace_counts_lines_and_is_bounded(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app()
    path = tmp_path / "blank.jsonl"
    # Errors after the blanks name the right line, in both formats.
    path.write_bytes(b"\n" * 70_000 + b'{"key": "a", "value": 1}\n')
    result = run(app, "state", "load", "STATE", str(path))
    assert result.exit_code == 1
    assert f"{path}, line 70001: the value must be a string" in result.output
    path.write_bytes(b"\r\n" * 3 + b"[\n" + b"\n" * 70_000 + b'{"key": "a", "value": 1}]')
    result = run(app, "state", "load", "STATE", str(path))
    assert result.exit_code == 1
    assert f"{path}, line 70005: the value must be a string" in result.output
    path.write_bytes(b" \n" * 3 + b"k=v\n")
    result = run(app, "state", "load", "STATE", str(path))
    assert f"{path}, line 4: expected JSON Lines" in result.output
    # More blanks than the longest valid record: refused like a long line.
    app = make_app(PLOY_MAX_KEY_BYTES=16, PLOY_MAX_VALUE_BYTES=16)
    limit = 6 * (16 + 16 + 1024) + 4096
    path.write_bytes(b" " * limit + b"\n" * 5 + b'{"key": "a", "value": "1"}\n')
    result = run(app, "state", "load", "STATE", str(path))
    assert result.exit_code == 1
    assert f"{path}, line 6: more blank space before the first record than any valid" in (
        result.output
    )
    assert "nothing was written" in result.output
    path.write_bytes(b" " * (limit - 100) + b'{"key": "a", "value": "1"}\n')
    assert run(app, "state", "load", "STATE", str(path)).exit_code == 0
    assert contents(app, "STATE") == {"a": "1"}


# -- -o FILE -----------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _no_temporary_files(*folders: Path) -> None:
    for folder in folders:
        assert [p.name for p in folder.iterdir() if p.name.startswith(".ploy-")] == []


def test_dump_to_a_new_file_gets_the_usual_mode(
    make_app: AppFactory, tmp_path: Path, umask_022: None
) -> None:
    app = make_app()
    with app.app_context():
        g.env.STATE.set("a", "1")
    out = tmp_path / "new.jsonl"
    assert run(app, "state", "dump", "STATE", "-o", str(out)).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # 0666 & ~umask, as open() makes it
    # Replacing a file keeps its mode, as writing it in place would.
    out.chmod(0o640)
    assert run(app, "state", "dump", "STATE", "-o", str(out)).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert records(out.read_bytes()) == [("a", "1")]
    _no_temporary_files(tmp_path)


def test_dump_through_a_symlink_writes_its_target(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    with app.app_context():
        g.env.STATE.set("a", "1")
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "dump.jsonl"
    target.write_bytes(b"old\n")
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    link = link_dir / "dump.jsonl"
    link.symlink_to(os.path.relpath(target, link_dir))
    result = run(app, "state", "dump", "STATE", "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert records(target.read_bytes()) == [("a", "1")]
    # A dangling link: the target is created, the link stays.
    target.unlink()
    assert run(app, "state", "dump", "STATE", "-o", str(link)).exit_code == 0
    assert link.is_symlink() and records(target.read_bytes()) == [("a", "1")]
    _no_temporary_files(real_dir, link_dir)


class _Reader(threading.Thread):
    """Reads a FIFO to its end, as another process on the pipe would."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.data = b""

    def run(self) -> None:
        with open(self.path, "rb") as f:
            self.data = f.read()


def test_dump_and_types_write_into_a_fifo(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    with app.app_context():
        g.env.STATE.set("a", "1")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "pipe-link"
    link.symlink_to(fifo)
    for out in (fifo, link):
        reader = _Reader(fifo)
        reader.start()
        result = run(app, "state", "dump", "STATE", "-o", str(out))
        reader.join(10)
        assert result.exit_code == 0, result.output
        assert stat.S_ISFIFO(fifo.stat().st_mode), "the FIFO was replaced"
        assert link.is_symlink()
        assert records(reader.data) == [("a", "1")]

        reader = _Reader(fifo)
        reader.start()
        result = run(app, "types", "-o", str(out))
        reader.join(10)
        assert result.exit_code == 0, result.output
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        assert b"class PloyEnv(Protocol)" in reader.data
    # A reader that goes away: an error, not a traceback.
    reader_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = threading.Timer(0.5, os.close, [reader_fd])
    writer.start()
    with app.app_context():
        g.env.STATE.set_many({f"k{i}": "x" * 1000 for i in range(2000)})
    result = run(app, "state", "dump", "STATE", "-o", str(fifo))
    writer.join()
    assert result.exit_code == 1
    assert f"Error: cannot write {fifo}: [Errno 32] Broken pipe" in result.output
    result = run(app, "types", "-o", str(fifo), "--check")
    assert result.exit_code == 1
    assert "not a regular file" in result.output
    _no_temporary_files(tmp_path)


def test_types_through_a_symlink_and_into_a_directory(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    target = tmp_path / "real_env.py"
    link = tmp_path / "ploy_env.py"
    link.symlink_to(target.name)
    result = run(app, "types", "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert "class PloyEnv(Protocol)" in target.read_text()
    assert run(app, "types", "-o", str(link), "--check").exit_code == 0
    # A directory (here through a link, which click's dir_okay=False misses) is an error.
    folder = tmp_path / "folder"
    folder.mkdir()
    dlink = tmp_path / "dlink"
    dlink.symlink_to(folder)
    for cmd in (["types"], ["state", "dump", "STATE"]):
        result = run(app, *cmd, "-o", str(dlink))
        assert result.exit_code != 0
        assert "is a directory" in result.output.replace("\n", " ")
    assert list(folder.iterdir()) == []
    _no_temporary_files(tmp_path)


# -- the summary on standard error -------------------------------------------------------


def test_dump_to_stdout_prints_its_summary_on_stderr(state_app: Flask, tmp_path: Path) -> None:
    with state_app.app_context():
        g.env.STATE.set_many({"a": "1", "b": "2"})
    result = run(state_app, "state", "dump", "STATE")
    assert result.exit_code == 0
    assert records(result.stdout_bytes) == [("a", "1"), ("b", "2")]
    assert result.stderr == "Dumped 2 keys of STATE.\n"


def test_dump_redirected_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    write_yaml(tmp_path / "ploy.yaml")
    assert flask(tmp_path, "state", "set", "STATE", "k", "v").returncode == 0
    done = flask(tmp_path, "state", "dump", "STATE")
    assert done.returncode == 0
    assert done.stdout == b'{"key": "k", "value": "v"}\n'
    assert done.stderr == b"Dumped 1 key of STATE.\n"


def test_dump_to_dev_stdout_writes_the_open_file(tmp_path: Path) -> None:
    """``-o /dev/stdout`` with stdout on a regular file writes that file; it
    is not replaced by a new one (which the shell's descriptor would miss)."""
    (tmp_path / "cliapp.py").write_text(APP_MODULE)
    write_yaml(tmp_path / "ploy.yaml")
    assert flask(tmp_path, "state", "set", "STATE", "k", "v").returncode == 0
    out = tmp_path / "out.jsonl"
    with open(out, "wb") as f:
        inode = os.fstat(f.fileno()).st_ino
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "cliapp", "ploy", "state", "dump", "STATE",
             "-o", "/dev/stdout"],
            cwd=tmp_path, env=env, stdout=f, stderr=subprocess.PIPE, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_ino == inode
    assert out.read_bytes() == b'{"key": "k", "value": "v"}\n'
    _no_temporary_files(tmp_path)
