"""What a newcomer runs: the Makefile (`make run`, `make test`), CI's entry point, the system-deps script."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_DEPS = ROOT / "deploy" / "install-system-deps.sh"
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

# Everything the UI build reads, and what it writes.
UI_INPUTS = [
    "client/package.json",
    "client/package-lock.json",
    "client/index.html",
    "client/vite.config.ts",
    "client/tsconfig.json",
    "client/src/main.tsx",
    "client/src/components/Board.tsx",
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile in a tree of empty stand-in files, all older than a finished install and UI build."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    old, done = time.time() - 3600, time.time() - 60
    for name in ["pyproject.toml", *UI_INPUTS]:
        stamp(tmp_path / name, old)
    for name in [".venv/.installed", "client/node_modules/.package-lock.json", "client/dist/index.html"]:
        stamp(tmp_path / name, done)
    return tmp_path


def stamp(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (mtime, mtime))


def dry_run(project: Path, target: str, **variables: str) -> list[str]:
    """The commands `make <target>` would run (with these environment variables)."""
    # As a top-level make, even when the tests run under `make test`.
    unset = ("PORT", "LEADERBOARD_PORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if k not in unset} | variables
    proc = subprocess.run(
        ["make", "-n", "--no-print-directory", target], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@needs_make
def test_ui_is_not_rebuilt_when_nothing_changed(project: Path) -> None:
    assert not any("npm" in line for line in dry_run(project, "ui"))
    assert dry_run(project, "run") == [".venv/bin/leaderboard serve --port 8000"]


@needs_make
@pytest.mark.parametrize(
    ("variables", "port"),
    [
        ({"PORT": "8001"}, "8001"),
        ({"LEADERBOARD_PORT": "8002"}, "8002"),
        ({"PORT": "8001", "LEADERBOARD_PORT": "8002"}, "8001"),
    ],
)
def test_make_run_serves_on_the_port_asked_for(project: Path, variables: dict[str, str], port: str) -> None:
    """README: `PORT=8001 make run` or `LEADERBOARD_PORT=8001 make run` (the setting of `serve`)."""
    assert dry_run(project, "run", **variables) == [f".venv/bin/leaderboard serve --port {port}"]


@needs_make
@pytest.mark.parametrize("changed", UI_INPUTS)
def test_ui_is_rebuilt_when_a_source_changed(project: Path, changed: str) -> None:
    stamp(project / changed, time.time())
    commands = dry_run(project, "ui")
    assert "cd client && npm run build" in commands
    assert ("cd client && npm ci --no-audit --no-fund" in commands) == (changed == "client/package-lock.json")


@needs_make
def test_make_test_sees_to_system_packages_first(project: Path) -> None:
    commands = dry_run(project, "test")
    assert commands[0] == "deploy/install-system-deps.sh test"
    assert commands.index("deploy/install-system-deps.sh test") < commands.index("cd client && npm run e2e:only")


def test_ci_runs_lint_then_every_test() -> None:
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith(("#", "set ", "cd "))]
    assert commands == ["make lint", "make test"]


def test_system_deps_script_names_what_is_missing_in_one_line() -> None:
    assert os.access(SYSTEM_DEPS, os.X_OK)
    env = {**os.environ, "CHROMIUM_PATH": "/nonexistent/chromium"}
    proc = subprocess.run([str(SYSTEM_DEPS), "--check", "test"], env=env, capture_output=True, text=True, timeout=60)
    if "npm" in proc.stderr:
        pytest.skip("npm is not installed here: the script stops at that first")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "missing /nonexistent/chromium (browser end-to-end tests): sudo apt-get install -y chromium, "
        "or set CHROMIUM_PATH to a Chromium binary"
    ]


def test_system_deps_for_run_need_no_browser() -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed here")
    env = {**os.environ, "CHROMIUM_PATH": "/nonexistent/chromium"}
    proc = subprocess.run([str(SYSTEM_DEPS), "--check", "run"], env=env, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("v18.20.4", False),
        ("v20.11.1", False),
        ("v20.19.0", True),
        ("v22.11.0", False),
        ("v22.12.0", True),
        ("v24.1.0", True),
    ],
)
def test_system_deps_refuse_a_node_too_old_for_vite(tmp_path: Path, version: str, ok: bool) -> None:
    """Debian 12's own nodejs is 18: the script says so in one line instead of letting Vite fail later."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed here")
    node = tmp_path / "node"
    node.write_text(f"#!/bin/sh\necho {version}\n")
    node.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run([str(SYSTEM_DEPS), "--check", "run"], env=env, capture_output=True, text=True, timeout=60)
    if ok:
        assert (proc.returncode, proc.stderr) == (0, "")
    else:
        assert proc.returncode == 1
        assert proc.stderr.splitlines() == [
            f"missing Node.js 20.19+ or 22.12+ to build the UI (this one is {version[1:]}): "
            "install Node.js 22 LTS from https://nodejs.org/"
        ]
