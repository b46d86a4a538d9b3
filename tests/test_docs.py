"""The documentation a newcomer follows: links stay inside the repository, and the README's commands work."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.processes import cli_command, cli_env
from support.services import Services

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _code_blocks(text: str, lang: str = "sh") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_in_the_repository_and_resolve(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"


def test_design_doc_holds_the_original_design_and_the_departures() -> None:
    text = (ROOT / "docs" / "design.md").read_text()
    for original in (
        "## The original design documents",
        "### Design card",
        "#### High-Level Design (HLD)",
        "`ZINCRBY` score in Redis `leaderboard_scores` sorted set.",
        "Populate Redis with results.",
    ):
        assert original in text
    departures = text.split("## Where we depart from it and why", 1)[1]
    for topic in (
        "Postgres commits first",
        "A cold board is rebuilt in full",
        "Starlette, not FastAPI",
        "WebSocket push, not polling",
        "Group commit",
        "Idempotency keys",
        "Operators and sort orders",
        "Embedded default servers",
    ):
        assert f"### {topic}" in departures, topic
    assert "(docs/design.md)" in (ROOT / "README.md").read_text()


def test_readme_examples_make_a_fresh_session_id_each_time() -> None:
    blocks = "\n".join(_code_blocks((ROOT / "README.md").read_text()))
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", blocks)
    assert "KEY=$(.venv/bin/leaderboard keys create" in blocks


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
async def test_readme_usage_commands_work_verbatim(services: Services, server: str) -> None:
    """The README's 'Using it' block, run twice (the second time for another player), against a server."""
    (block,) = [b for b in _code_blocks((ROOT / "README.md").read_text()) if "keys create --role submit" in b]
    script = block.replace("http://127.0.0.1:8000", server).replace(".venv/bin/leaderboard", " ".join(cli_command()))
    replies = []
    for user in ("alice", "bob"):
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script.replace("alice", user),
            env=cli_env(services.dsn, services.redis_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        submitted, top, rank = (json.loads(line) for line in out.decode().replace("}{", "}\n{").splitlines())
        assert submitted.get("user_id") == user and submitted.get("duplicate") is False, submitted
        assert rank["user_id"] == user, rank
        replies.append(top)
    assert [e["user_id"] for e in replies[-1]["entries"]] == ["alice", "bob"]


def _json_objects(text: str) -> list[Any]:
    """The JSON documents printed one after another (curl -s prints no newline between them)."""
    decoder, found, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        obj, pos = decoder.raw_decode(text, pos)
        found.append(obj)
    return found


async def _run_readme_example(services: Services, server: str, marker: str) -> list[Any]:
    """Run the README's 'Using it' block (which creates $KEY) then the block containing `marker`, against
    `server`, in bash; the JSON objects they printed."""
    blocks = _code_blocks((ROOT / "README.md").read_text())
    (usage,) = [b for b in blocks if "keys create --role submit" in b]
    (example,) = [b for b in blocks if marker in b]
    script = (usage + example).replace("http://127.0.0.1:8000", server)
    script = script.replace(".venv/bin/leaderboard", " ".join(cli_command()))
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, env=cli_env(services.dsn, services.redis_url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return _json_objects(out.decode())


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
async def test_readme_batch_example_works_verbatim(services: Services, server: str) -> None:
    """The README's batch example, run after the 'Using it' block (whose $KEY it uses), twice: fresh session
    ids each time, so both runs are accepted and the values add up."""
    for run in (1, 2):
        results = (await _run_readme_example(services, server, "/submit/batch"))[-1]["results"]
        assert [(r["index"], r["user_id"], r["accepted"], r["duplicate"], r["error"]) for r in results] == [
            (0, "carol", True, False, None),
            (1, "dave", True, False, None),
        ], results
        assert [r["score"] for r in results] == [300 * run, 250 * run]
        assert [r["rank"] for r in results] == [1, 2]


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
async def test_readme_seasons_example_works_verbatim(services: Services, server: str) -> None:
    """The README's seasons example, run after the 'Using it' block (whose $KEY it uses): a weekly board whose
    next reset is a Monday at 00:00 UTC, an ack in season 1, a reset by hand, the seasons listed newest first,
    and season 1 read after it ended."""
    board, ack, reset, listing, old = (await _run_readme_example(services, server, "/reset"))[-5:]
    assert (board["id"], board["reset"], board["season"]) == ("weekly", "weekly", 1), board
    nxt = datetime.fromisoformat(board["next_reset_at"].replace("Z", "+00:00"))
    assert (nxt.weekday(), nxt.hour, nxt.minute, nxt.second, nxt.utcoffset()) == (0, 0, 0, 0, timedelta(0))
    assert (ack["board"], ack["user_id"], ack["score"], ack["season"], ack["duplicate"]) == (
        "weekly",
        "alice",
        120,
        1,
        False,
    ), ack
    assert (reset["board"], reset["season"], reset["ended"]["season"], reset["ended"]["total"]) == (
        "weekly",
        2,
        1,
        1,
    ), reset
    assert [(s["season"], s["ended_at"] is None, s["total"]) for s in listing["seasons"]] == [
        (2, True, 0),
        (1, False, 1),
    ], listing
    assert [w["user_id"] for w in listing["seasons"][1]["winners"]] == ["alice"]
    assert (old["board"], old["total"], [(e["rank"], e["user_id"], e["score"]) for e in old["entries"]]) == (
        "weekly",
        1,
        [(1, "alice", 120)],
    ), old


@pytest.mark.parametrize("doc", [ROOT / "README.md", ROOT / "docs" / "operations.md"], ids=lambda p: p.name)
def test_settings_tables_list_every_setting(doc: Path) -> None:
    from leaderboard.settings import Settings

    rows = set(re.findall(r"^\| `(LEADERBOARD_[A-Z0-9_]+)` \|", doc.read_text(), re.M))
    expected = {f"LEADERBOARD_{name.upper()}" for name in Settings.model_fields}
    if doc.name == "operations.md":  # the deployment's table: host and port are the image's business
        expected -= {"LEADERBOARD_HOST", "LEADERBOARD_PORT"}
    assert sorted(expected - rows) == []
    assert sorted(rows - expected) == []


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
async def test_readme_moderation_example_works_verbatim(services: Services, server: str) -> None:
    """The README's 'Remove a cheater' example, run after the 'Using it' block (whose $KEY and alice it uses):
    the ban removes alice, her submission is refused 403 banned, the unban restores her value from the log, and
    the audit log lists both actions newest first."""
    banned, refused, lifted, audit = (await _run_readme_example(services, server, "/ban"))[-4:]
    assert banned == {"user_id": "alice", "banned": True, "boards": {"global": None}}, banned
    assert (refused["status"], refused["code"]) == (403, "banned"), refused
    assert lifted == {"user_id": "alice", "banned": False, "boards": {"global": 120}}, lifted
    assert [(e["action"], e["user_id"], e["actor"], e["reason"]) for e in audit["entries"]] == [
        ("unban", "alice", "moderator", "appeal accepted"),
        ("ban", "alice", "moderator", "aimbot (ticket 4411)"),
    ], audit
