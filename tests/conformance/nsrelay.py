"""Run Ploy's emulator, and relay a Unix socket to it, inside a private network namespace.

Started by :mod:`tests.conformance.emulator` as the first process of fresh
network and PID namespaces (``unshare --net --pid --fork --kill-child``), so
the emulator's listeners, which bind every interface, are reachable from
nowhere but this namespace's loopback. The test process, in the host's
namespace, talks to the worker through the Unix socket (Unix sockets are not
network-namespaced); each connection is piped to the worker's TCP port.

Usage: ``nsrelay.py SOCKET PROJECT BINDIR``. Prints ``ready`` once the worker
answers, then serves until its standard input closes (the test process ended
or let go). It is PID 1 of its namespace: when it exits, the kernel kills the
emulator and workerd with it, so nothing outlives the tests.

Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

WORKER_PORT = 8787
DASHBOARD_PORT = 8788  # also the bindings' server
START_TIMEOUT = 90.0


def _worker_answers() -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", WORKER_PORT, timeout=5)
    try:
        conn.request("POST", "/", body=json.dumps({"steps": []}))
        resp = conn.getresponse()
        return resp.status == 200 and json.loads(resp.read()) == []
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _serve(client: socket.socket) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", WORKER_PORT), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _exit_when_stdin_closes() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


def main() -> int:
    sock_path, project, bindir = sys.argv[1:4]
    tmp = os.path.join(project, "tmp")
    os.makedirs(tmp, exist_ok=True)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "TMPDIR": tmp,  # ploy dev writes its workerd config and bundle there
        "NO_COLOR": "1",
        "CI": "true",
    }
    with open(os.path.join(project, "ploy-dev.log"), "wb") as log:
        proc = subprocess.Popen(
            [
                os.path.join(bindir, "ploy"),
                "dev",
                "--port",
                str(WORKER_PORT),
                "--dashboard-port",
                str(DASHBOARD_PORT),
                "--no-watch",
            ],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not _worker_answers():
        if proc.poll() is not None:
            print(f"failed: ploy dev exited with {proc.returncode}", flush=True)
            return 1
        if time.monotonic() > deadline:
            print(f"failed: the worker did not answer within {START_TIMEOUT:.0f} s", flush=True)
            return 1
        time.sleep(0.1)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(16)
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    print("ready", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
