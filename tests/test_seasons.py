"""Seasons: schedules (presets and cron), exactly one reset per boundary across processes, every submission in
exactly one season (storms and retries across a boundary), archived reads, Redis after a reset, the live
`season` frame, and bad inputs that write nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from leaderboard import seasons
from leaderboard.protocol import BoardCreate
from leaderboard.store import Store
from support.clients import assert_problem, assert_seq_order, submit, subscribe_top, ws_connect
from support.polling import eventually
from support.reference import percentile, ranked
from support.services import ApiKeys, ServerURL, runtime_of

UTC0 = datetime(2026, 11, 30, 15, 55, 12, tzinfo=UTC)  # a Monday
# A schedule whose natural boundary never falls within a test: the tests bring the boundary themselves
# (boundary_in), and a real one (a minute's) would add a season when a slow run crosses it.
YEARLY = "0 0 1 1 *"


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def make_board(admin: httpx.AsyncClient, board: str, reset: str | None = None, **spec: Any) -> dict[str, Any]:
    resp = await admin.post("/api/leaderboards", json={"id": board, "reset": reset, **spec})
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def reset(admin: httpx.AsyncClient, board: str) -> dict[str, Any]:
    resp = await admin.post(f"/api/leaderboards/{board}/reset")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def board_of(http: httpx.AsyncClient, board: str) -> dict[str, Any]:
    resp = await http.get(f"/api/leaderboards/{board}")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def read(http: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    resp = await http.get(path, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def boundary_in(pool: asyncpg.Pool, board: str, seconds: float) -> datetime:
    """Bring the board's next boundary to `seconds` from now (the clock, injected: no test waits a week)."""
    at: datetime = await pool.fetchval(
        "UPDATE leaderboards SET next_reset_at = now() + make_interval(secs => $2) WHERE id = $1 "
        "RETURNING next_reset_at",
        board, seconds,
    )  # fmt: skip
    return at


async def season_rows(pool: asyncpg.Pool, board: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch("SELECT * FROM seasons WHERE board_id = $1 ORDER BY season", board)
    return rows


async def table_counts(pool: asyncpg.Pool) -> list[int]:
    tables = ("leaderboards", "seasons", "leaderboard", "game_sessions")
    return [await pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables]


# ---------------------------------------------------------------------------------------------------------
# Schedules


@pytest.mark.parametrize(
    ("reset", "after", "expected"),
    [
        ("daily", UTC0, datetime(2026, 12, 1, tzinfo=UTC)),
        ("weekly", UTC0, datetime(2026, 12, 7, tzinfo=UTC)),  # the next Monday, never the same instant
        ("weekly", datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC)),
        ("monthly", UTC0, datetime(2026, 12, 1, tzinfo=UTC)),
        ("monthly", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("0 */6 * * *", UTC0, datetime(2026, 11, 30, 18, 0, tzinfo=UTC)),
        ("* * * * *", UTC0, datetime(2026, 11, 30, 15, 56, tzinfo=UTC)),
        ("30 9 * * 1-5", datetime(2026, 12, 4, 10, 0, tzinfo=UTC), datetime(2026, 12, 7, 9, 30, tzinfo=UTC)),
        (None, UTC0, None),
    ],
)
def test_each_schedule_gives_its_next_boundary_in_utc(
    reset: str | None, after: datetime, expected: datetime | None
) -> None:
    assert seasons.next_reset(seasons.check(reset), after) == expected


@pytest.mark.parametrize("bad", ["", "hourly", "* * * *", "* * * * * *", "61 * * * *", "0 0 32 * *", "0 0 * * 8"])
def test_an_invalid_schedule_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="cron expression"):
        seasons.check(bad)


async def test_a_reset_of_a_named_season_is_a_safe_retry(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    """POST …/reset?season=N ends season N only if it is still live: a retry after a lost answer (the first
    call did end it) is a 409 and ends nothing more."""
    await make_board(admin, "retry")
    await submit(api, "a", 5, "retry")
    first = await admin.post("/api/leaderboards/retry/reset", params={"season": 1})
    assert first.status_code == 200, first.text
    assert (first.json()["ended"]["season"], first.json()["season"]) == (1, 2)
    await submit(api, "b", 7, "retry")
    again = assert_problem(await admin.post("/api/leaderboards/retry/reset", params={"season": 1}), 409,
                           "season_ended")  # fmt: skip
    assert "live season is 2" in again["detail"]
    board = await board_of(api, "retry")
    assert (board["season"], board["total"]) == (2, 1)  # season 2 and its entry untouched
    assert [s["season"] for s in (await read(api, "/api/leaderboards/retry/seasons"))["seasons"]] == [2, 1]


async def test_seasons_are_paged_newest_first(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    """GET …/seasons?limit=N&before=S: a daily board has hundreds of seasons after a year. The first page starts
    with the live season; `next` is the `before` of the following page, null after the last one."""
    await make_board(admin, "paged")
    for i in range(5):
        await submit(api, f"p{i}", i + 1, "paged")
        await reset(admin, "paged")  # seasons 1-5 ended, 6 live

    async def page(**params: Any) -> tuple[list[int], int | None]:
        body = await read(api, "/api/leaderboards/paged/seasons", **params)
        return [s["season"] for s in body["seasons"]], body["next"]

    assert await page() == ([6, 5, 4, 3, 2, 1], None)
    assert await page(limit=3) == ([6, 5, 4], 4)
    assert await page(limit=3, before=4) == ([3, 2, 1], None)
    assert await page(limit=1) == ([6], 6)
    assert await page(limit=2, before=6) == ([5, 4], 4)
    assert await page(limit=6) == ([6, 5, 4, 3, 2, 1], None)
    assert await page(before=1) == ([], None)
    older = (await read(api, "/api/leaderboards/paged/seasons", limit=2, before=3))["seasons"]
    assert [(s["season"], [w["user_id"] for w in s["winners"]]) for s in older] == [(2, ["p1"]), (1, ["p0"])]
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"before": 0}, {"before": "x"}):
        assert_problem(await api.get("/api/leaderboards/paged/seasons", params=bad), 422, "validation_error")


async def test_boards_show_their_season_and_next_reset(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    weekly = await make_board(admin, "ladder", "weekly", title="Weekly ladder")
    assert weekly["reset"] == "weekly" and weekly["season"] == 1
    assert before - timedelta(seconds=5) <= iso(weekly["season_started_at"]) <= datetime.now(UTC)
    nxt = iso(weekly["next_reset_at"])
    assert nxt.weekday() == 0 and (nxt.hour, nxt.minute, nxt.second) == (0, 0, 0)
    assert timedelta(0) < nxt - before <= timedelta(days=7)
    assert weekly["next_reset_at"].endswith("Z") or weekly["next_reset_at"].endswith("+00:00")
    cron = await make_board(admin, "six", "0  */6 * * *")  # spacing is normalised
    assert cron["reset"] == "0 */6 * * *" and iso(cron["next_reset_at"]).hour % 6 == 0
    never = await board_of(api, "global")
    assert (never["reset"], never["season"], never["next_reset_at"]) == (None, 1, None)
    listed = {b["id"]: b for b in (await read(api, "/api/leaderboards"))["boards"]}
    assert listed["ladder"]["next_reset_at"] == weekly["next_reset_at"]
    assert listed["six"]["season"] == 1 and listed["global"]["next_reset_at"] is None


async def test_a_scheduled_boundary_resets_the_board_within_a_second(
    server: ServerURL, admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await make_board(admin, "minute", "* * * * *")
    ack = await submit(api, "alice", 7, "minute")
    assert ack["season"] == 1
    at = await boundary_in(pool, "minute", 1.0)
    live = await eventually(lambda: board_of(api, "minute"), within=5)
    info = await eventually(lambda: _season_at_least(api, "minute", 2), within=5)
    ended = (await season_rows(pool, "minute"))[0]
    assert ended["season"] == 1 and ended["total"] == 1
    assert timedelta(0) <= ended["ended_at"] - at < timedelta(seconds=1.2), (ended["ended_at"], at)
    nxt = iso(info["next_reset_at"])  # the next minute boundary after the reset
    assert (nxt.second, nxt.microsecond) == (0, 0) and timedelta(0) < nxt - ended["ended_at"] <= timedelta(minutes=1)
    assert live["id"] == "minute"
    assert (await read(api, "/api/leaderboard/top", board="minute"))["entries"] == []
    assert (await submit(api, "alice", 2, "minute"))["season"] == 2


async def _season_at_least(http: httpx.AsyncClient, board: str, season: int) -> dict[str, Any]:
    info = await board_of(http, board)
    assert info["season"] >= season, info
    return info


async def test_two_processes_and_one_boundary_give_one_reset(
    make_server: Callable[..., Awaitable[ServerURL]],
    make_client: Callable[..., httpx.AsyncClient],
    keys: ApiKeys,
    pool: asyncpg.Pool,
) -> None:
    servers = [await make_server(), await make_server()]
    admins = [make_client(s, keys.admin) for s in servers]
    await make_board(admins[0], "duel", YEARLY)
    for boundary in range(2):
        await asyncio.gather(*(submit(a, f"p{i}", 1, "duel") for i, a in enumerate(admins)))
        await boundary_in(pool, "duel", 0.5)
        for a in admins:  # both processes see the new season, and there is one season row per boundary
            await eventually(lambda a=a, s=boundary + 2: _season_at_least(a, "duel", s), within=5)  # type: ignore[misc]
        await asyncio.sleep(1.0)  # two ticks more of both schedules: nothing else happens
        assert [(r["season"], r["total"]) for r in await season_rows(pool, "duel")] == [
            (s + 1, 2) for s in range(boundary + 1)
        ]
        assert (await board_of(admins[1], "duel"))["season"] == boundary + 2


async def test_racing_resets_of_one_boundary_end_one_season(store: Store) -> None:
    """What makes a boundary reset once whatever the number of processes: the reset is conditional on the
    season it ends, and the board row's lock orders the racers."""
    board = await store.create_board(BoardCreate(id="race", reset="* * * * *"))
    assert board is not None
    results = await asyncio.gather(*(store.reset_board("race", expect=1) for _ in range(8)))
    ended = [r for r in results if r is not None]
    assert len(ended) == 1 and (ended[0].season, ended[0].next_season) == (1, 2)
    assert await store.live_season("race") == 2
    assert [e.season for e in await store.seasons("race")] == [1]
    assert await store.reset_board("race", expect=1) is None  # a late racer of the same boundary
    assert await store.reset_board("race") is not None  # a reset by hand ends whatever is live


async def test_boundaries_missed_while_nothing_ran_close_one_season_at_start_up(
    make_server: Callable[..., Awaitable[ServerURL]],
    make_client: Callable[..., httpx.AsyncClient],
    keys: ApiKeys,
    pool: asyncpg.Pool,
) -> None:
    first = await make_server()
    admin = make_client(first, keys.admin)
    await make_board(admin, "daily", "daily")
    await submit(admin, "alice", 3, "daily")
    await first.stop()
    # three days of boundaries passed while no process ran
    await pool.execute("UPDATE leaderboards SET next_reset_at = now() - interval '3 days' WHERE id = 'daily'")
    second = make_client(await make_server(), keys.admin)
    info = await eventually(lambda: _season_at_least(second, "daily", 2), within=5)
    assert info["season"] == 2  # one season closed, not three
    assert [(r["season"], r["total"]) for r in await season_rows(pool, "daily")] == [(1, 1)]
    nxt = iso(info["next_reset_at"])
    assert nxt > datetime.now(UTC) and (nxt.hour, nxt.minute) == (0, 0)


# ---------------------------------------------------------------------------------------------------------
# Every submission in exactly one season


async def test_operators_start_from_nothing_in_the_new_season(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    for op, scores, then in [("incr", [10, 5], 3), ("best", [10, 50], 3), ("set", [10, 5], 3)]:
        board = f"op-{op}"
        await make_board(admin, board, operator=op)
        for s in scores:
            await submit(api, "alice", s, board)
        before = (await read(api, "/api/leaderboard/rank/alice", board=board))["score"]
        answer = await reset(admin, board)
        assert answer["board"] == board and answer["season"] == 2
        assert answer["ended"]["season"] == 1 and answer["ended"]["total"] == 1
        assert iso(answer["ended"]["started_at"]) <= iso(answer["ended"]["ended_at"])
        ack = await submit(api, "alice", then, board)
        assert (ack["score"], ack["rank"], ack["season"]) == (then, 1, 2)
        old = await read(api, "/api/leaderboard/rank/alice", board=board, season=1)
        assert old["score"] == before


async def test_a_retry_across_the_boundary_answers_with_the_season_it_counted_in(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await make_board(admin, "retry")
    sid = str(uuid.uuid4())
    first = await submit(api, "alice", 40, "retry", session_id=sid)
    await submit(api, "alice", 2, "retry")
    await reset(admin, "retry")
    await submit(api, "alice", 5, "retry")  # season 2 has its own value
    again = await submit(api, "alice", 40, "retry", session_id=sid)
    assert (again["duplicate"], again["season"], again["score"]) == (True, 1, 42)
    assert first["season"] == 1 and not first["duplicate"]
    # a WebSocket retry says the same, and nothing was written by either retry
    async with ws_connect(str(api.base_url), _credential(api)) as ws:
        frame = {"type": "submit", "board": "retry", "user_id": "alice", "score": 40, "session_id": sid}
        ack = await ws.reply_to(frame)
        assert (ack["type"], ack["duplicate"], ack["season"], ack["score"]) == ("ack", True, 1, 42)
    assert await pool.fetchval("SELECT count(*) FROM game_sessions WHERE board_id = 'retry'") == 3
    live = await read(api, "/api/leaderboard/rank/alice", board="retry")
    assert live["score"] == 5


def _credential(http: httpx.AsyncClient) -> str:
    return http.headers["Authorization"].removeprefix("Bearer ")


async def test_a_storm_across_the_boundary_counts_each_submission_in_exactly_one_season(
    server: ServerURL, admin: httpx.AsyncClient, api: httpx.AsyncClient, pool: asyncpg.Pool, keys: ApiKeys
) -> None:
    await make_board(admin, "storm", YEARLY)
    users = [f"u{i}" for i in range(20)]
    acks: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def player_socket(k: int) -> None:
        async with ws_connect(server, keys.submit) as ws:
            n = 0
            while not stop.is_set():
                frames = [
                    {"type": "submit", "ref": f"{k}-{n}-{j}", "board": "storm", "user_id": users[(k * 7 + j) % 20],
                     "score": 1 + (n + j) % 5, "session_id": str(uuid.uuid4())}
                    for j in range(10)
                ]  # fmt: skip
                for f in frames:
                    await ws.send(f)
                want = {f["ref"]: f for f in frames}
                while want:
                    msg = await ws.recv(10)
                    if msg.get("ref") in want:
                        assert msg["type"] == "ack", msg
                        assert msg["score"] >= want.pop(msg["ref"])["score"]
                        acks.append({**msg, "sent": frames[int(msg["ref"].split("-")[2])]["score"]})
                n += 1

    storm = [asyncio.create_task(player_socket(k)) for k in range(4)]
    await asyncio.sleep(0.3)
    await boundary_in(pool, "storm", 0.5)
    await eventually(lambda: _season_at_least(api, "storm", 2), within=5)
    await asyncio.sleep(0.5)
    await reset(admin, "storm")  # and one by hand in the same storm
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*storm)

    seasons_seen = {a["season"] for a in acks}
    assert seasons_seen == {1, 2, 3}, seasons_seen
    # per season and player: the acked submissions sum to the stored value; the log agrees, row for row
    acked: dict[tuple[int, str], int] = defaultdict(int)
    for a in acks:
        assert not a["duplicate"]
        acked[(a["season"], a["user_id"])] += a["sent"]
    stored = {
        (r["season"], r["user_id"]): r["value"]
        for r in await pool.fetch("SELECT season, user_id, value FROM leaderboard WHERE board_id = 'storm'")
    }
    assert stored == dict(acked)
    logged = await pool.fetchval("SELECT count(*) FROM game_sessions WHERE board_id = 'storm'")
    assert logged == len(acks)
    # each ended season's published total is what it holds, and reads of every season equal the reference
    for row in await season_rows(pool, "storm"):
        values = {u: v for (s, u), v in stored.items() if s == row["season"]}
        assert row["total"] == len(values)
        page = await read(api, "/api/leaderboard/top", board="storm", season=row["season"], limit=100)
        assert [(e["rank"], e["user_id"], e["score"]) for e in page["entries"]] == [
            (e["rank"], e["user_id"], e["score"]) for e in ranked(values, "desc")
        ]
    live = {u: v for (s, u), v in stored.items() if s == 3}
    page = await read(api, "/api/leaderboard/top", board="storm", limit=100)
    assert [(e["user_id"], e["score"]) for e in page["entries"]] == [
        (e["user_id"], e["score"]) for e in ranked(live, "desc")
    ]


# ---------------------------------------------------------------------------------------------------------
# Reads of an ended season


async def test_an_ended_season_reads_like_the_live_one_did(admin: httpx.AsyncClient, api: httpx.AsyncClient) -> None:
    values = {"a": 30, "b": 20, "c": 20, "d": 10, "e": 10, "f": 10, "g": 5, "h": -3}
    await make_board(admin, "arch", sort="desc", operator="set")
    for user, v in values.items():
        await submit(api, user, v, "arch", display_name=f"Player {user.upper()}")
    live_top = await read(api, "/api/leaderboard/top", board="arch", limit=5, offset=2)
    live_rank = await read(api, "/api/leaderboard/rank/e", board="arch", around=2)
    await reset(admin, "arch")
    await submit(api, "zz", 1000, "arch")  # the new season changes nothing of the old one

    def but_seq(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "seq"}

    archived_top = await read(api, "/api/leaderboard/top", board="arch", limit=5, offset=2, season=1)
    assert but_seq(archived_top) == but_seq(live_top)
    archived_rank = await read(api, "/api/leaderboard/rank/e", board="arch", around=2, season=1)
    assert but_seq(archived_rank) == but_seq(live_rank)
    reference = ranked(values, "desc")
    for offset in range(0, 8, 3):
        page = await read(api, "/api/leaderboard/top", board="arch", limit=3, offset=offset, season=1)
        assert page["total"] == len(values)
        assert [(e["rank"], e["user_id"], e["score"], e["display_name"]) for e in page["entries"]] == [
            (e["rank"], e["user_id"], e["score"], f"Player {e['user_id'].upper()}")
            for e in reference[offset : offset + 3]
        ]
    for e in reference:
        me = await read(api, f"/api/leaderboard/rank/{e['user_id']}", board="arch", season=1)
        assert (me["rank"], me["score"], me["percentile"]) == (e["rank"], e["score"], percentile(e["rank"], 8))
    # a player of the ended season only is not on the live board, and the live board has only the new season
    assert_problem(await api.get("/api/leaderboard/rank/a", params={"board": "arch"}), 404, "not_found")
    now = await read(api, "/api/leaderboard/top", board="arch")
    assert [(e["user_id"], e["score"]) for e in now["entries"]] == [("zz", 1000)] and now["total"] == 1
    listing = await read(api, "/api/leaderboards/arch/seasons")
    assert listing["board"] == "arch"
    live, ended = listing["seasons"]
    assert (live["season"], live["ended_at"], live["total"]) == (2, None, 1)
    assert [w["user_id"] for w in live["winners"]] == ["zz"]
    assert (ended["season"], ended["total"]) == (1, 8) and ended["ended_at"] is not None
    assert [(w["rank"], w["user_id"], w["score"], w["display_name"]) for w in ended["winners"]] == [
        (1, "a", 30, "Player A"), (2, "b", 20, "Player B"), (2, "c", 20, "Player C")
    ]  # fmt: skip


async def test_an_ascending_board_keeps_its_order_in_the_archive(
    admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    values = {"fast": 61_000, "mid": 75_500, "slow": 90_250, "tie": 75_500}
    await make_board(admin, "speed", sort="asc", operator="best", format="time_ms")
    for user, v in values.items():
        await submit(api, user, v, "speed")
    await reset(admin, "speed")
    page = await read(api, "/api/leaderboard/top", board="speed", season=1)
    assert [(e["rank"], e["user_id"]) for e in page["entries"]] == [
        (e["rank"], e["user_id"]) for e in ranked(values, "asc")
    ]
    winners = (await read(api, "/api/leaderboards/speed/seasons"))["seasons"][1]["winners"]
    assert [w["user_id"] for w in winners] == ["fast", "mid", "tie"]


# ---------------------------------------------------------------------------------------------------------
# Redis holds the live season only


async def test_redis_holds_the_live_season_and_a_flush_rebuilds_only_it(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, rds: Any, pool: asyncpg.Pool
) -> None:
    await make_board(admin, "cache")
    for i in range(30):
        await submit(api, f"old{i}", i, "cache")
    await reset(admin, "cache")
    for i in range(5):
        await submit(api, f"new{i}", 10 * i, "cache")
    want = [(f"new{i}", 10 * i) for i in reversed(range(5))]

    async def redis_has_the_live_season() -> None:
        assert await rds.zcard("lb:{cache}:z") == 5
        assert str(await rds.get("lb:{cache}:season")) == "2"
        assert await rds.exists("lb:{cache}:ready")

    await eventually(redis_has_the_live_season)
    await rds.flushdb()
    page = await read(api, "/api/leaderboard/top", board="cache")  # answered by Postgres, starts a rebuild
    assert [(e["user_id"], e["score"]) for e in page["entries"]] == want
    await eventually(redis_has_the_live_season)
    page = await read(api, "/api/leaderboard/top", board="cache")
    assert [(e["user_id"], e["score"]) for e in page["entries"]] == want and page["total"] == 5
    old = await read(api, "/api/leaderboard/top", board="cache", season=1, limit=100)
    assert old["total"] == 30 and old["entries"][0]["user_id"] == "old29"
    # a write of the live season after the rebuild lands in it
    ack = await submit(api, "new0", 100, "cache")
    assert (ack["rank"], ack["season"]) == (1, 2)


async def test_the_integrity_check_agrees_with_redis_after_a_reset(
    server: ServerURL, admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    """The verification compares Redis' highest version with the live season's: a reset must not leave the
    ended season's versions behind (the board would be rebuilt at every check)."""
    rt = runtime_of(server)
    await make_board(admin, "checked")
    for i in range(5):
        await submit(api, f"p{i}", i + 1, "checked")
    await reset(admin, "checked")
    info = await rt.store.board("checked")

    async def debts_paid() -> None:
        assert (await rt.store.invariants("checked"))[2] == 0

    await eventually(debts_paid)  # (the check skips a board with debts unpaid)
    assert await rt.ranks.verify(info)  # an empty new season
    await submit(api, "p0", 1, "checked")
    assert await rt.ranks.verify(info)


# ---------------------------------------------------------------------------------------------------------
# Live: the season frame, then the new season


async def test_subscribers_see_the_season_end_then_the_new_season(
    server: ServerURL, keys: ApiKeys, admin: httpx.AsyncClient, api: httpx.AsyncClient
) -> None:
    await make_board(admin, "live")
    for user, v in {"a": 5, "b": 9, "c": 7}.items():
        await submit(api, user, v, "live", display_name=user.upper())
    async with ws_connect(server, keys.read) as ws, ws_connect(server, keys.read) as follower:
        snap = await subscribe_top(ws, "live", limit=2)
        assert [e["user_id"] for e in snap["entries"]] == ["b", "c"]
        reply = await follower.reply_to({"type": "subscribe", "board": "live", "topics": ["rank"], "user_id": "c"})
        assert reply["type"] == "subscribed"
        mine = await follower.recv_type("rank")
        assert mine["rank"] == 2

        await reset(admin, "live")
        season = await ws.recv_type("season")
        assert season == {
            "type": "season", "board": "live", "ended": 1, "season": 2,
            "final": [
                {"rank": 1, "user_id": "b", "display_name": "B", "score": 9},
                {"rank": 2, "user_id": "c", "display_name": "C", "score": 7},
            ],
        }  # fmt: skip
        empty = await ws.recv_type("top", where=lambda m: m["board"] == "live")
        assert (empty["entries"], empty["total"]) == ([], 0)
        assert empty["seq"] > snap["seq"]
        gone = await follower.recv_type("rank", where=lambda m: m["rank"] is None)
        assert (gone["previous_rank"], gone["seq"] > mine["seq"]) == (2, True)
        # a socket that follows a player only hears of the end too, with the podium (three here), once
        told = [f for f in follower.frames if f["type"] == "season"]
        assert [(f["ended"], f["season"]) for f in told] == [(1, 2)]
        assert [e["user_id"] for e in told[0]["final"]] == ["b", "c", "a"]

        # the new season goes on live, and seq keeps growing across the boundary
        await submit(api, "c", 1, "live")
        fresh = await ws.recv_type("top", where=lambda m: m["total"] == 1)
        assert [(e["user_id"], e["score"]) for e in fresh["entries"]] == [("c", 1)]
        back = await follower.recv_type("rank", where=lambda m: m["rank"] == 1)
        assert back["previous_rank"] is None
        assert_seq_order([f for f in ws.frames if f["type"] == "top"])
        assert_seq_order([f for f in follower.frames if f["type"] == "rank"])


async def test_a_second_process_pushes_the_season_frame_too(
    make_server: Callable[..., Awaitable[ServerURL]],
    make_client: Callable[..., httpx.AsyncClient],
    keys: ApiKeys,
) -> None:
    one, two = await make_server(), await make_server()
    admin = make_client(one, keys.admin)
    await make_board(admin, "far")
    await submit(admin, "x", 4, "far")
    async with ws_connect(two, keys.read) as ws:
        await subscribe_top(ws, "far")
        await reset(admin, "far")
        frame = await ws.recv_type("season")
        assert (frame["ended"], frame["season"], [e["user_id"] for e in frame["final"]]) == (1, 2, ["x"])
        assert (await ws.recv_type("top"))["entries"] == []
    # the other process reads the ended season as season 1 and the live one as 2
    other = make_client(two, keys.read)
    assert (await read(other, "/api/leaderboard/top", board="far", season=1))["total"] == 1
    assert (await read(other, "/api/leaderboard/top", board="far", season=2))["total"] == 0


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: a clear 4xx, nothing written


@pytest.mark.parametrize(
    "bad", ["", "hourly", "0 0 * *", "61 * * * *", "0 0 30 2 * *", "0 0 30 2 *", "0 0 31 4 *", 7, ["daily"]]
)
async def test_an_invalid_schedule_is_a_422_naming_the_field(
    admin: httpx.AsyncClient, pool: asyncpg.Pool, bad: Any
) -> None:
    before = await table_counts(pool)
    body = assert_problem(await admin.post("/api/leaderboards", json={"id": "nope", "reset": bad}), 422,
                          "validation_error")  # fmt: skip
    assert body["errors"][0]["loc"] == ["reset"] and body["detail"].startswith("reset:"), body
    assert await table_counts(pool) == before


async def test_bad_season_reads_and_resets_are_refused_and_write_nothing(
    admin: httpx.AsyncClient, api: httpx.AsyncClient, anon: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await make_board(admin, "guarded")
    await submit(api, "a", 1, "guarded")
    before = await table_counts(pool)
    for params in ({"season": "0"}, {"season": "-1"}, {"season": "x"}, {"season": "1.5"}):
        assert_problem(await api.get("/api/leaderboard/top", params={"board": "guarded", **params}), 422,
                       "validation_error")  # fmt: skip
        assert_problem(await api.get("/api/leaderboard/rank/a", params={"board": "guarded", **params}), 422,
                       "validation_error")  # fmt: skip
    body = assert_problem(await api.get("/api/leaderboard/top", params={"board": "guarded", "season": 2}), 404,
                          "not_found")  # fmt: skip
    assert "season 2" in body["detail"]
    assert_problem(await api.get("/api/leaderboard/rank/a", params={"board": "guarded", "season": 9}), 404,
                   "not_found")  # fmt: skip
    assert_problem(await api.post("/api/leaderboards/guarded/reset"), 403, "forbidden")
    assert_problem(await anon.post("/api/leaderboards/guarded/reset"), 401, "unauthorized")
    assert_problem(await admin.post("/api/leaderboards/nosuch/reset"), 404, "not_found")
    assert_problem(await admin.post("/api/leaderboards/nosuch/reset", params={"season": 1}), 404, "not_found")
    for bad in ("0", "x", "1.5"):
        assert_problem(await admin.post("/api/leaderboards/guarded/reset", params={"season": bad}), 422,
                       "validation_error")  # fmt: skip
    assert_problem(await admin.post("/api/leaderboards/guarded/reset", params={"season": 2}), 409, "not_live")
    assert_problem(await admin.get("/api/leaderboards/nosuch/seasons"), 404, "not_found")
    assert await table_counts(pool) == before
    assert (await board_of(api, "guarded"))["season"] == 1
