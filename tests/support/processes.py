"""`leaderboard serve` in a subprocess: free ports, the CLI's command line and environment, start and stop."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from support.services import SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, within: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + within
    last: str = ""
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"server process exited with {proc.returncode}")
            try:
                resp = await http.get("/readyz")
                if resp.status_code == 200:
                    return
                last = resp.text
            except httpx.TransportError as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready after {within}s: {last}")


def cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("leaderboard")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from leaderboard.cli import main; sys.exit(main())"]


def cli_env(dsn: str | None, redis_url: str | None, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    if dsn:
        env["LEADERBOARD_DATABASE_URL"] = dsn
    if redis_url:
        env["LEADERBOARD_REDIS_URL"] = redis_url
    env["LEADERBOARD_PLAYER_TOKEN_SECRET"] = SECRET
    for key, value in settings.items():
        env[f"LEADERBOARD_{key.upper()}"] = str(value)
    return env


def start_serve(
    workdir: Path, dsn: str | None, redis_url: str | None, *args: str, **settings: Any
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """Start `leaderboard serve` on a free port, output to a log file; return (base URL, process, log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / f"serve-{port}.log"
    cmd = [*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(workdir)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, *args], env=cli_env(dsn, redis_url, **settings), stdout=out, stderr=subprocess.STDOUT
        )
    return f"http://127.0.0.1:{port}", proc, log


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@asynccontextmanager
async def spawned_server(
    workdir: Path, dsn: str | None, redis_url: str | None, *args: str, **settings: Any
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`leaderboard serve` in a subprocess, ready; yields (base URL, process); SIGTERM at exit."""
    url, proc, log = start_serve(workdir, dsn, redis_url, *args, **settings)
    try:
        try:
            await wait_ready(url, within=60, proc=proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{tail(log)}") from None
        yield url, proc
    finally:
        await asyncio.to_thread(stop_process, proc)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
