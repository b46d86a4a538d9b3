"""Deployment files: docker-compose.yml against the Compose Specification, Dockerfile, .env.example, nginx."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
COMPOSE_SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

# Settings the app reads (LEADERBOARD_ prefix) that a deployment must be able to set.
REQUIRED_SETTINGS = [
    "DATABASE_URL",
    "REDIS_URL",
    "PLAYER_TOKEN_SECRET",
    "PUBLIC_READ",
    "PUSH_INTERVAL_MS",
    "MAX_FRAME_BYTES",
    "SLOW_SOCKET_TIMEOUT_S",
    "DRAIN_TIMEOUT_S",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "STATIC_DIR",
    "DATA_DIR",
    "WORKERS",
]
NEW_RELIC_VARS = ["NEW_RELIC_LICENSE_KEY", "NEW_RELIC_APP_NAME", "NEW_RELIC_CONFIG_FILE"]
# Names of secrets; *_TOKEN_ISSUER, *_TOKEN_MAX_LIFETIME_S and the like are settings about tokens, not tokens.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN$|LICENSE_KEY|API_KEY|PRIVATE)", re.I)
SECRET_VALUE = re.compile(
    r"lbk_[A-Za-z0-9_-]+|eyJ[A-Za-z0-9_-]{8,}|[A-Za-z][A-Za-z0-9+.-]*://[^:/\s@]+:[^@\s/$]+@|(?i:bearer)\s+\S{8,}"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.protocols.Validator:
    raw = (DATA / "compose-spec.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == COMPOSE_SCHEMA_SHA256, "vendored schema differs from README"
    schema = json.loads(raw)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


# --- docker-compose.yml ---------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], compose_validator: jsonschema.protocols.Validator
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in compose_validator.iter_errors(compose)]
    assert errors == []


def test_schema_validation_catches_mistakes(
    compose: dict[str, Any], compose_validator: jsonschema.protocols.Validator
) -> None:
    """The schema is not vacuous: typical mistakes in our file would be reported."""
    for path, bad in [
        (("services", "app", "deploy", "replicas"), [2]),
        (("services", "app", "healthcheck", "intervall"), "10s"),
        (("services", "nginx", "ports"), "8080:80"),
        (("volumes", "pgdata"), "not-a-mapping"),
    ]:
        doc = json.loads(json.dumps(compose))
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad
        assert list(compose_validator.iter_errors(doc)), f"schema accepted {path}={bad!r}"


def test_app_runs_two_replicas_with_two_workers(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert app["deploy"]["replicas"] == 2
    assert app["command"] == ["leaderboard", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
    assert "container_name" not in app and "ports" not in app  # replicas: only nginx publishes a port
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    # Docker sends SIGKILL after stop_grace_period: it must leave room for the drain.
    assert _seconds(app["stop_grace_period"]) > 10


def test_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["nginx"]["image"].startswith("nginx:")
    assert services["app"]["image"] == services["migrate"]["image"]


def _seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert m, duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    one_shot = []
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if check.get("disable"):
            # Only a one-shot job may do without, and something must wait for its successful exit.
            assert svc.get("restart") == "no", f"{name}: healthcheck disabled on a long-running service"
            one_shot.append(name)
            continue
        assert check["test"] and check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout"):
            assert _seconds(check[key]) > 0
        assert check["retries"] >= 1
    for job in one_shot:
        waiters = [
            n
            for n, s in services.items()
            if isinstance(s.get("depends_on"), dict)
            and s["depends_on"].get(job, {}).get("condition") == "service_completed_successfully"
        ]
        assert waiters, f"nobody waits for one-shot job {job}"
    assert services["migrate"]["command"] == ["leaderboard", "migrate"]
    app_check = " ".join(services["app"]["healthcheck"]["test"])
    assert "/readyz" in app_check and "127.0.0.1:8000" in app_check


def test_only_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source")
            assert source in declared, f"{name}: {vol!r} is not a named volume"
            used.add(source)
    assert "pgdata" in declared and used == declared
    pg_mounts = compose["services"]["postgres"]["volumes"]
    assert "pgdata:/var/lib/postgresql/data" in pg_mounts


def test_nginx_gets_the_repository_config(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    (cfg,) = nginx["configs"]
    assert cfg["target"] == "/etc/nginx/nginx.conf"
    assert compose["configs"][cfg["source"]]["file"] == "./deploy/nginx.conf"
    assert (ROOT / "deploy" / "nginx.conf").is_file()
    assert nginx["depends_on"]["app"]["condition"] == "service_healthy"
    assert any(str(p).endswith(":80") for p in nginx["ports"])


def test_no_secrets_in_compose_file(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not SECRET_VALUE.search(text), SECRET_VALUE.search(text)
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        pairs = env.items() if isinstance(env, dict) else [(*e.split("=", 1), None)[:2] for e in env]
        for key, val in pairs:
            if SECRET_NAME.search(str(key)):
                assert val is None or str(val).startswith("${"), f"{name}: literal secret {key}"
        # Each container gets only its own settings: the database server's, or the app's; no other service
        # sees either file.
        own = {"postgres": "deploy/env/postgres.env", "app": "deploy/env/app.env", "migrate": "deploy/env/app.env"}
        expected = own.get(name)
        assert svc.get("env_file") in ((expected, [expected]) if expected else (None,)), f"{name}: env_file"
        if expected:
            assert (ROOT / f"{expected}.example").is_file(), f"{expected}.example missing"
    assert "secrets" not in compose  # credentials come from the per-container env files


def test_per_container_env_files_hold_only_their_own_settings() -> None:
    postgres = _env_file(ROOT / "deploy" / "env" / "postgres.env.example")
    app = _env_file(ROOT / "deploy" / "env" / "app.env.example")
    assert set(postgres) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert not any(k.startswith("POSTGRES_") for k in app)  # the app never sees the server's password variable
    # The DSN's password placeholder is the one the postgres file sets.
    assert postgres["POSTGRES_PASSWORD"] in app["LEADERBOARD_DATABASE_URL"]
    # .env only feeds Compose's interpolation: no container reads it, so an app setting there does nothing.
    assert list(_env_file(ROOT / ".env.example")) == ["LEADERBOARD_HTTP_PORT"]
    gitignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/env/*.env" in gitignored and ".env" in gitignored


# --- .env.example ---------------------------------------------------------------------------------------


# Compose interpolation (.env), then each container's own settings.
ENV_EXAMPLES = [ROOT / ".env.example", *(ROOT / "deploy" / "env" / f"{n}.env.example" for n in ("postgres", "app"))]


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _env_example() -> dict[str, str]:
    """Every variable of the example env files."""
    out = {}
    for path in ENV_EXAMPLES:
        out.update(_env_file(path))
    return out


def test_env_example_documents_every_setting() -> None:
    env = _env_example()
    for name in REQUIRED_SETTINGS:
        assert f"LEADERBOARD_{name}" in env, f"LEADERBOARD_{name} missing from .env.example"
    for name in NEW_RELIC_VARS:
        assert name in env
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert name in env
    # Each variable has a comment right above it (its documentation).
    for path in ENV_EXAMPLES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^[A-Z][A-Z0-9_]*=", line):
                assert i > 0 and lines[i - 1].startswith("#"), f"undocumented in {path.name}: {line}"


def test_env_example_matches_the_settings_class() -> None:
    try:
        from leaderboard.settings import Settings
    except ImportError as exc:  # the core is written in parallel
        pytest.skip(f"leaderboard.settings not importable yet: {exc}")
    env = _env_example()
    missing = [
        f"LEADERBOARD_{field.upper()}"
        for field in Settings.model_fields
        if field not in ("host", "port") and f"LEADERBOARD_{field.upper()}" not in env
    ]
    assert missing == []
    unknown = [k for k in env if k.startswith("LEADERBOARD_") and k[12:].lower() not in Settings.model_fields]
    assert unknown == ["LEADERBOARD_HTTP_PORT"]  # compose interpolation only, not an app setting


def test_env_example_holds_only_placeholders_for_secrets() -> None:
    for key, val in _env_example().items():
        if SECRET_NAME.search(key) and val:
            assert val.startswith("CHANGE_ME"), f"{key} must be a CHANGE_ME placeholder"
        if SECRET_VALUE.search(val):  # e.g. a DSN with a password in it
            assert "CHANGE_ME" in val, f"{key} looks like a real credential"


# --- Dockerfile -----------------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def _dockerignored() -> list[str]:
    return [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    instrs = _dockerfile()
    froms = [rest for instr, rest in instrs if instr == "FROM"]
    assert froms[0].startswith("node:20") and froms[-1].startswith("python:3.11-slim")
    runs = " ".join(rest for instr, rest in instrs if instr == "RUN")
    assert "npm ci" in runs and "npm run build" in runs and "pip" in runs
    users = [rest for instr, rest in instrs if instr == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # Everything after the last FROM is the runtime image.
    last_from = max(i for i, (instr, _) in enumerate(instrs) if instr == "FROM")
    runtime = instrs[last_from:]
    assert any(instr == "HEALTHCHECK" and "/readyz" in rest for instr, rest in runtime)
    (cmd,) = [json.loads(rest) for instr, rest in runtime if instr == "CMD"]
    assert cmd[:2] == ["leaderboard", "serve"] and "--workers" in cmd
    env = " ".join(rest for instr, rest in runtime if instr == "ENV")
    static = re.search(r"LEADERBOARD_STATIC_DIR=(\S+)", env)
    assert static, "LEADERBOARD_STATIC_DIR not set"
    assert any(
        instr == "COPY" and "--from=client" in rest and rest.split()[-1] == static.group(1) for instr, rest in runtime
    ), "client/dist is not copied to LEADERBOARD_STATIC_DIR"


def test_dockerfile_copies_only_existing_unignored_paths() -> None:
    ignored = _dockerignored()
    for instr, rest in _dockerfile():
        if instr != "COPY" or "--from=" in rest:
            continue
        *sources, _dest = [a for a in rest.split() if not a.startswith("--")]
        for src in sources:
            path = src.rstrip("/")
            assert (ROOT / path).exists(), f"COPY source {src} does not exist"
            top = path.split("/")[0]
            assert top not in ignored and path not in ignored, f"COPY source {src} is excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_junk_out() -> None:
    ignored = _dockerignored()
    for entry in (".env", ".venv", ".git", "client/node_modules", "newrelic.ini"):
        assert entry in ignored


def test_wheel_ships_migrations(tmp_path: Path) -> None:
    """The image installs the wheel, so the SQL migrations must be inside it (pyproject force-include)."""
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("no pyproject.toml")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and "No module named" in proc.stderr and "hatchling" in proc.stderr:
        pytest.skip("hatchling is not installed in this venv (needed to build the wheel offline)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import zipfile

    (wheel,) = tmp_path.glob("leaderboard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    sql = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    assert sql, "no migrations in sql/"
    for name in sql:
        assert f"leaderboard/sql/{name}" in names
    assert "leaderboard/observability.py" in names and "leaderboard/logs.py" in names


# --- nginx ----------------------------------------------------------------------------------------------

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install -y nginx-light) - cannot run nginx -t"
)


def _nginx_conf() -> str:
    return (ROOT / "deploy" / "nginx.conf").read_text()


def test_nginx_config_is_websocket_aware() -> None:
    conf = _nginx_conf()
    ws = re.search(r"location = /ws \{(.*?)\n        \}", conf, re.S)
    assert ws, "no location for /ws"
    body = ws.group(1)
    assert re.search(r"proxy_set_header Upgrade \$http_upgrade;", body)
    assert re.search(r"proxy_set_header Connection \$connection_upgrade;", body)
    timeout = re.search(r"proxy_read_timeout (\d+)s;", body)
    assert timeout and int(timeout.group(1)) >= 600
    assert "proxy_http_version 1.1;" in conf
    # Upstream by compose service name, resolved at request time through Docker's DNS.
    assert re.search(r"resolver 127\.0\.0\.11\b", conf)
    assert re.search(r"set \$\w+ http://app:8000;", conf)
    assert re.search(r"map \$http_upgrade \$connection_upgrade", conf)


@needs_nginx
def test_nginx_t_accepts_the_config(tmp_path: Path) -> None:
    assert NGINX is not None
    (tmp_path / "logs").mkdir()
    conf = str(ROOT / "deploy" / "nginx.conf")
    proc = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(tmp_path), "-c", conf, "-e", "stderr", "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited: {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} not listening")


BACKEND = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

async def echo(request):
    return JSONResponse({"path": request.url.path, "headers": dict(request.headers)})

async def ws(websocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text("echo:" + text)

app = Starlette(routes=[Route("/api/echo/{x}", echo), Route("/metrics", echo), WebSocketRoute("/ws", ws)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[int]:
    """nginx running deploy/nginx.conf, with `app:8000` pointed at a local uvicorn; yields nginx's port."""
    assert NGINX is not None
    app_port, nginx_port = _free_port(), _free_port()
    conf = _nginx_conf()
    assert "http://app:8000" in conf and "listen 80;" in conf
    conf = conf.replace("http://app:8000", f"http://127.0.0.1:{app_port}")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{nginx_port};")
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf)
    backend = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BACKEND), str(app_port)])
    directives = f"daemon off; pid {tmp_path}/nginx.pid;"
    conf_path = str(tmp_path / "nginx.conf")
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", conf_path, "-e", "stderr", "-g", directives])
    try:
        _wait_port(app_port, backend)
        _wait_port(nginx_port, nginx)
        yield nginx_port
    finally:
        for proc in (nginx, backend):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@needs_nginx
async def test_nginx_proxies_http_and_websocket(proxied: int) -> None:
    from websockets.asyncio.client import connect

    base = f"http://127.0.0.1:{proxied}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.get("/api/echo/7?x=1")
        assert r.status_code == 200
        seen = r.json()
        assert seen["path"] == "/api/echo/7"
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert re.fullmatch(r"[0-9a-f]{32}", seen["headers"]["x-request-id"])
        assert (await client.get("/metrics")).status_code == 404  # not exposed to the internet
        health = await client.get("/nginx-health")
        assert health.status_code == 200 and health.text == "ok\n"

    async with connect(f"ws://127.0.0.1:{proxied}/ws") as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "echo:hello"
        await ws.send("again")
        assert await asyncio.wait_for(ws.recv(), 5) == "echo:again"


# --- deploy/measure_redis_memory.py -----------------------------------------------------------------------


def test_measure_redis_memory_script(tmp_path: Path) -> None:
    """The capacity numbers in docs/operations.md come from this script: it must run and clean up."""
    import redis

    url = os.environ.get("LEADERBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    base = re.sub(r"/\d*$", "", url)  # the db number in a URL would override db= below
    db = 13
    try:
        client = redis.Redis.from_url(base, db=db, socket_connect_timeout=1)
        client.ping()
    except (redis.RedisError, OSError):
        pytest.skip(f"no Redis at {url}")
    if client.dbsize():
        pytest.skip(f"Redis db {db} is in use by someone else")
    try:
        script = str(ROOT / "deploy" / "measure_redis_memory.py")
        proc = subprocess.run(
            [sys.executable, script, "--url", base, "--db", str(db), "--members", "5000", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert client.connection_pool.connection_kwargs["db"] == db
        assert client.dbsize() == 0, "the script must FLUSHDB its scratch database"
        keys = set(result["structures"])
        assert keys == {"lb:{memtest}:z", "lb:{memtest}:v", "lb:{memtest}:n"}
        for s in result["structures"].values():
            assert s["memory_usage_bytes"] > 5000 * 16  # at least the member names themselves
        per_member = result["total"]["bytes_per_member"]
        assert 100 < per_member < 2000, per_member
    finally:
        client.close()
