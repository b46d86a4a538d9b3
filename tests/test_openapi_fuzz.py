"""The served OpenAPI document is honest: what it says is what the server does (issue #9, schema honesty).

schemathesis runs against a real server (its `st run`, in a subprocess: this process' event loop serves the
app meanwhile) with every built-in check and two of ours (schemathesis_hooks.py): no 5xx, status codes,
content types, headers and bodies as documented, `Allow` on 405, bad input refused, valid input accepted,
every 4xx/5xx a problem+json body. Bounded: 25 examples per operation, a fixed seed, one worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.clients import assert_problem, create_board, submit
from support.services import ApiKeys, ServerURL

pytestmark = pytest.mark.schemathesis

REPO = Path(__file__).resolve().parents[1]
SEED = "20261130"
EXAMPLES = "25"


async def test_405_lists_every_method_of_the_path(anon: httpx.AsyncClient) -> None:
    for method, path, allowed in [
        ("PUT", "/api/leaderboards", {"GET", "HEAD", "POST"}),  # two routes share the path
        ("DELETE", "/api/leaderboard/top", {"GET", "HEAD"}),
        ("GET", "/api/leaderboard/submit", {"POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
    ]:
        resp = await anon.request(method, path)
        assert_problem(resp, 405, "method_not_allowed")
        assert {m.strip() for m in resp.headers["allow"].split(",")} == allowed, (method, path, resp.headers)


async def test_openapi_schemas_use_json_schema_keywords(anon: httpx.AsyncClient) -> None:
    """pydantic writes constraints it cannot translate under their own names ("ge", "le"): clients and
    validators ignore those, so a bound would silently vanish from the contract."""
    doc = (await anon.get("/api/openapi.json")).json()
    foreign = {"ge", "le", "gt", "lt", "strict", "strip_whitespace", "max_digits"}
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            found.extend(f"{where}.{k}" for k in foreign & node.keys() if k != "properties")
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(doc["components"]["schemas"], "schemas")
    assert found == []
    score = doc["components"]["schemas"]["Submission"]["properties"]["score"]
    assert (score["minimum"], score["maximum"]) == (-(2**53 - 1), 2**53 - 1)


async def test_schemathesis_finds_no_mismatch(
    make_server: Any, keys: ApiKeys, make_client: Any, tmp_path: Path
) -> None:
    # (the failed-authentication slowdown would answer most of the run 429: tests/test_abuse.py covers it)
    server: ServerURL = await make_server(auth_failures_max=0)
    admin = make_client(server, keys.admin)
    await create_board(admin, "speedrun", sort="asc", operator="best")
    for user, score in {"0": 5, "alice": 10, "bob": 10, "carol": -3}.items():  # "0": what schemathesis tries
        await submit(admin, user, score)
        await submit(admin, user, score, "speedrun")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(REPO / "tests")}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("st")), "run", f"{server}/api/openapi.json",
        "--checks", "all",
        # replaced by valid_requests_are_accepted (schemathesis_hooks.py): a valid submission may still be
        # refused 422 out_of_range, when it would push the board value out of ±(2^53-1)
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", EXAMPLES, "--seed", SEED, "--workers", "1", "--generation-database", "none",
        "--request-timeout", "10", "--no-color", "--header", f"Authorization: Bearer {keys.admin}",
        "--report", "junit", "--report-dir", str(tmp_path),
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 100)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "No issues found" in text, text[-3000:]
    operations = re.search(r"Selected: (\d+)/(\d+)", text)
    assert operations is not None and operations[1] == operations[2], text[-3000:]
    assert f"Tested: {operations[1]}" in text, text[-3000:]  # every operation of the document was exercised


async def test_text_postgres_cannot_store_is_refused_as_invalid(admin: httpx.AsyncClient) -> None:
    """Found by schemathesis: a NUL in a title or display name was a 503 'database unavailable'."""
    resp = await admin.post("/api/leaderboards", json={"id": "nul", "title": "a\x00b"})
    assert_problem(resp, 422, "validation_error")
    resp = await admin.post("/api/leaderboard/submit", json={"user_id": "u", "score": 1, "display_name": "\x00"})
    assert_problem(resp, 422, "validation_error")
    ack = await submit(admin, "u", 120.0)  # type: ignore[arg-type]  # JSON Schema: 120.0 is an integer
    assert ack["score"] == 120
