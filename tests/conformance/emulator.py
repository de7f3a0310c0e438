"""Ploy's own local emulator (``ploy dev`` from ``@meetploy/cli``), for the conformance suite.

``tests/conformance/install.sh`` (run by ``.ci/run``) installs it with a
Node.js 22 binary into ``.ploy-emulator/``. :func:`start` copies the worker of
``tests/conformance/worker/`` into a temporary project and runs ``ploy dev``
on it inside private network and PID namespaces (its listeners bind every
interface), through :mod:`tests.conformance.nsrelay`; :class:`Emulator`
sends it steps over the relay's Unix socket.

What is missing (the install, Node >= 22.13, ``unshare`` and ``ip``, the
right to make namespaces) skips locally and fails under ``CI=true``
(:func:`tests.servers.need`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import servers

HERE = Path(__file__).resolve().parent
INSTALL = Path(os.environ.get("PLOY_EMULATOR_DIR", servers.ROOT / ".ploy-emulator"))
BIN = INSTALL / "node_modules" / ".bin"
CLI_VERSION = "1.48.0"
MIN_NODE = (22, 13)
START_TIMEOUT = 120.0


def _node_version() -> tuple[int, ...] | None:
    node = BIN / "node"
    if not node.exists():
        return None
    try:
        out = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"v(\d+)\.(\d+)", out.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def _cli_version() -> str | None:
    try:
        meta = json.loads((INSTALL / "node_modules/@meetploy/cli/package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(meta.get("version"))


def check_installed() -> None:
    """Skip (locally) or fail (CI) unless the emulator can run here."""
    hint = "run tests/conformance/install.sh"
    servers.need((BIN / "ploy").exists(), f"Ploy's emulator in {INSTALL} ({hint})")
    version = _cli_version()
    servers.need(version == CLI_VERSION, f"@meetploy/cli {CLI_VERSION} (found {version}; {hint})")
    node = _node_version()
    servers.need(
        node is not None and node >= MIN_NODE,
        f"Node.js >= {'.'.join(map(str, MIN_NODE))} in {BIN} (found {node}; {hint})",
    )
    servers.need(
        bool(shutil.which("unshare") and shutil.which("ip")),
        "unshare and ip (util-linux, iproute2), to run the emulator in its own network namespace",
    )
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--kill-child", "true"],
        capture_output=True,
        check=False,
    )
    servers.need(probe.returncode == 0, "the right to create network namespaces (unshare)")


class Emulator:
    """A running emulator; :meth:`run` sends it steps through the Unix socket."""

    def __init__(self, sock: str, project: Path, proc: subprocess.Popen[bytes]) -> None:
        self.sock = sock
        self.project = project
        self.proc = proc

    def run(self, steps: list[list[Any]], timeout: float = 60) -> list[dict[str, Any]]:
        """Run *steps* (``[binding, method, *args]``) in order in one request.

        :returns: One ``{"ok": result}`` or ``{"error": message}`` per step.
        """
        conn = _UnixHTTPConnection(self.sock, timeout)
        try:
            conn.request(
                "POST",
                "/",
                body=json.dumps({"steps": steps}),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"the worker answered {resp.status}: {body[:500]!r}\n{self.log()}")
        results: list[dict[str, Any]] = json.loads(body)
        assert len(results) == len(steps), (len(results), len(steps))
        return results

    def log(self) -> str:
        """The tail of ``ploy dev``'s output."""
        with contextlib.suppress(OSError):
            return (self.project / "ploy-dev.log").read_text(errors="replace")[-4000:]
        return ""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


@contextlib.contextmanager
def start(workdir: Path) -> Iterator[Emulator]:
    """Run the conformance worker in Ploy's emulator until the block ends."""
    check_installed()
    project = workdir / "project"
    shutil.copytree(HERE / "worker", project)
    sock = str(workdir / "worker.sock")
    if len(sock) > 100:  # the limit of a Unix socket's path is 107 bytes
        sock = os.path.join(tempfile.mkdtemp(prefix="ploy-", dir="/tmp"), "worker.sock")
    relay = HERE / "nsrelay.py"
    proc = subprocess.Popen(
        [
            "unshare",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" "$@"',
            sys.executable,
            str(relay),
            sock,
            str(project),
            str(BIN),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    emulator = Emulator(sock, project, proc)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
            if not ready:
                raise RuntimeError(f"Ploy's emulator did not start\n{emulator.log()}")
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
        if line.strip() != b"ready":
            raise RuntimeError(f"Ploy's emulator did not start: {line!r}\n{emulator.log()}")
        yield emulator
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
