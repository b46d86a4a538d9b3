"""TLS at the edge: deploy/nginx-tls.conf.example serves HTTPS and WSS, and the Compose override is valid."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from test_deploy import BACKEND, COMPOSE_SCHEMA_SHA256, DATA, NGINX, ROOT, _free_port, _wait_port, needs_nginx

TLS_CONF = ROOT / "deploy" / "nginx-tls.conf.example"
TLS_OVERRIDE = ROOT / "deploy" / "compose.tls.yml.example"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1, as tls_cert and tls_key files in a secrets dir."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(secrets / "tls_key"), "-out", str(secrets / "tls_cert")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return secrets


@pytest.fixture
def tls_proxied(tmp_path: Path, certificate: Path) -> Iterator[tuple[int, int]]:
    """nginx running the TLS example with `app:8000` pointed at a local uvicorn; yields (http, https) ports."""
    assert NGINX is not None
    app_port, http_port, https_port = _free_port(), _free_port(), _free_port()
    conf = TLS_CONF.read_text()
    for old, new in [
        ("http://app:8000", f"http://127.0.0.1:{app_port}"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("worker_processes auto;", "worker_processes 1;"),
        ("/run/secrets/", f"{certificate}/"),
    ]:
        assert old in conf, old
        conf = conf.replace(old, new)
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf)
    backend = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BACKEND), str(app_port)])
    directives = f"daemon off; pid {tmp_path}/nginx.pid;"
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr", "-g", directives]
    )
    try:
        _wait_port(app_port, backend)
        _wait_port(https_port, nginx)
        yield http_port, https_port
    finally:
        for proc in (nginx, backend):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@needs_nginx
@needs_openssl
async def test_tls_example_serves_https_and_wss(tls_proxied: tuple[int, int], certificate: Path) -> None:
    from websockets.asyncio.client import connect

    http_port, https_port = tls_proxied
    trust = ssl.create_default_context(cafile=str(certificate / "tls_cert"))
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{https_port}", verify=trust, timeout=10) as client:
        r = await client.get("/api/echo/1")
        assert r.status_code == 200
        assert r.json()["headers"]["x-forwarded-proto"] == "https"
        assert (await client.get("/metrics")).status_code == 404
    async with connect(f"wss://127.0.0.1:{https_port}/ws", ssl=trust) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "echo:hello"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as plain:
        health = await plain.get("/nginx-health")  # the compose health check stays on port 80
        assert health.status_code == 200 and health.text == "ok\n"
        moved = await plain.get("/api/echo/1?x=1")
        assert moved.status_code == 308
        assert moved.headers["location"] == "https://127.0.0.1/api/echo/1?x=1"


def _merge(base: Any, override: Any) -> Any:
    """Enough of Compose's merge for a schema check: mappings merge, lists append (Compose itself merges a
    service's configs by target, so there the TLS config replaces nginx.conf)."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: _merge(base[k], v) if k in base else v for k, v in {**base, **override}.items()}
    if isinstance(base, list) and isinstance(override, list):
        return base + [v for v in override if v not in base]
    return override


def test_tls_override_is_a_valid_compose_file() -> None:
    raw = (DATA / "compose-spec.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == COMPOSE_SCHEMA_SHA256
    schema = json.loads(raw)
    validator = jsonschema.validators.validator_for(schema)(schema)
    override = yaml.safe_load(TLS_OVERRIDE.read_text())
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for doc in (override, _merge(base, override)):
        assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)] == []
    nginx = override["services"]["nginx"]
    assert nginx["configs"] == [{"source": "nginx_tls_conf", "target": "/etc/nginx/nginx.conf"}]
    assert nginx["secrets"] == ["tls_cert", "tls_key"]
    assert override["configs"]["nginx_tls_conf"]["file"] == "./deploy/nginx-tls.conf"
    conf = TLS_CONF.read_text()
    assert "ssl_certificate     /run/secrets/tls_cert;" in conf and "ssl_certificate_key /run/secrets/tls_key;" in conf
    assert "deploy/tls/" in (ROOT / ".gitignore").read_text().splitlines()
