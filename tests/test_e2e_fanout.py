"""End to end (uvicorn, WebSocket clients, two processes): debounced pushes, seq order, rank pushes, slow sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from websockets.asyncio.client import connect

from leaderboard import outbox
from leaderboard.cache import channel_of
from support.clients import (
    WS,
    assert_seq_order,
    bearer,
    create_board,
    player_token,
    submit,
    subscribe_top,
    top,
    ws_connect,
    ws_submit_many,
    ws_url,
)
from support.polling import eventually
from support.processes import spawned_server
from support.services import ApiKeys, ServerURL, Services, runtime_of


async def test_pushes_are_debounced_complete_and_ordered(make_server: Any, keys: ApiKeys, make_client: Any) -> None:
    server = await make_server(push_interval_ms=300)
    api = make_client(server, keys.submit)
    async with ws_connect(server) as ws:
        snap = await subscribe_top(ws, limit=100)
        started = time.monotonic()
        await asyncio.gather(*(submit(api, f"u{i:02d}", i + 1) for i in range(40)))
        frames = []
        while not frames or frames[-1]["total"] < 40:
            frames.append(await ws.recv_type("top", within=5))
        elapsed = time.monotonic() - started
        assert_seq_order([snap, *frames])
        assert frames[-1]["seq"] > snap["seq"]
        # coalesced: at most one snapshot per push interval (+1 for the leading edge, +1 for timing slack)
        assert len(frames) <= elapsed / 0.3 + 2, (len(frames), elapsed)
        assert len(frames) < 40
        final = frames[-1]
        assert [e["user_id"] for e in final["entries"]] == [f"u{i:02d}" for i in range(39, -1, -1)]
        page = await top(api, limit=100)
        assert final["entries"] == page["entries"] and final["seq"] == page["seq"]
        # nothing more arrives once the board is quiet
        assert [f for f in await ws.quiet(0.7) if f["type"] == "top"] == []


async def test_no_top_push_for_changes_below_the_cut(server: ServerURL, api: httpx.AsyncClient) -> None:
    for i in range(12):
        await submit(api, f"u{i:02d}", 100 - i * 5)  # u00=100 ... u11=45
    async with ws_connect(server) as ws:
        snap = await subscribe_top(ws, limit=5)
        assert [e["user_id"] for e in snap["entries"]] == ["u00", "u01", "u02", "u03", "u04"]
        await submit(api, "u11", 10)  # 55: still rank 6 at best, below the top 5
        await submit(api, "u10", 1)
        assert [f for f in await ws.quiet(0.6) if f["type"] == "top"] == []
        await submit(api, "u11", 31)  # 86: into the top 5
        push = await ws.recv_type("top")
        assert [e["user_id"] for e in push["entries"]] == ["u00", "u01", "u02", "u11", "u03"]
        assert push["seq"] > snap["seq"]


async def test_watchers_get_the_same_snapshots(server: ServerURL, api: httpx.AsyncClient) -> None:
    async with ws_connect(server) as a, ws_connect(server) as b:
        await subscribe_top(a)
        await subscribe_top(b)
        await submit(api, "alice", 5)
        fa = await a.recv_type("top", where=lambda m: m["total"] == 1)
        fb = await b.recv_type("top", where=lambda m: m["total"] == 1)
        assert fa == fb


async def test_rank_push_only_when_rank_or_score_changes(server: ServerURL, api: httpx.AsyncClient) -> None:
    await submit(api, "alice", 100)
    await submit(api, "bob", 50)
    async with ws_connect(server) as ws:
        await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "bob"})
        first = await ws.recv_type("rank")
        assert (first["rank"], first["score"]) == (2, 50)
        await submit(api, "alice", 10)  # bob's rank and score unchanged
        await submit(api, "zed", 1)  # below bob: unchanged
        assert [f for f in await ws.quiet(0.6) if f["type"] == "rank"] == []
        await submit(api, "carol", 70)  # bob falls to 3
        fell = await ws.recv_type("rank")
        assert (fell["rank"], fell["previous_rank"], fell["score"]) == (3, 2, 50)
        await submit(api, "bob", 5)  # score changes, rank stays
        same = await ws.recv_type("rank")
        assert (same["rank"], same["previous_rank"], same["score"]) == (3, 3, 55)
        assert same["seq"] > fell["seq"] > first["seq"]


async def test_rank_pushes_on_asc_board(server: ServerURL, api: httpx.AsyncClient, keys: ApiKeys) -> None:
    async with httpx.AsyncClient(base_url=server, headers=bearer(keys.admin)) as admin:
        resp = await admin.post(
            "/api/leaderboards", json={"id": "laps", "title": "Laps", "sort": "asc", "operator": "best"}
        )
        assert resp.status_code == 201
    await submit(api, "alice", 60, "laps")
    async with ws_connect(server) as ws:
        await ws.reply_to({"type": "subscribe", "board": "laps", "topics": ["rank"], "user_id": "alice"})
        assert (await ws.recv_type("rank"))["rank"] == 1
        await submit(api, "bob", 55, "laps")  # faster: alice falls
        fell = await ws.recv_type("rank")
        assert (fell["board"], fell["rank"], fell["previous_rank"], fell["score"]) == ("laps", 2, 1, 60)


async def test_two_server_processes_share_pushes(
    services: Services, clean: None, keys: ApiKeys, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    settings = {"push_interval_ms": 50, "drain_timeout_s": 2}
    async with (
        spawned_server(tmp_path / "a", services.dsn, services.redis_url, **settings) as (url_a, _),
        spawned_server(tmp_path / "b", services.dsn, services.redis_url, **settings) as (url_b, _),
    ):
        async with (
            ws_connect(url_a) as watcher,
            httpx.AsyncClient(base_url=url_b, headers=bearer(keys.submit)) as b,
        ):
            snap = await subscribe_top(watcher)
            await watcher.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "alice"})
            await watcher.recv_type("rank")
            ack = await submit(b, "alice", 42)
            pushed = await watcher.recv_type("top", where=lambda m: m["total"] == 1)
            assert pushed["entries"][0]["user_id"] == "alice" and pushed["entries"][0]["score"] == 42
            assert pushed["seq"] > snap["seq"]
            moved = await watcher.recv_type("rank", where=lambda m: m["rank"] is not None)
            assert (moved["rank"], moved["score"]) == (1, 42) == (ack["rank"], ack["score"])
            # the other way round, over a WebSocket submission with a player token
            async with ws_connect(url_b) as watcher_b, ws_connect(url_a, player_token("bob")) as player:
                await subscribe_top(watcher_b)
                assert (await player.reply_to({"type": "submit", "user_id": "bob", "score": 50}))["type"] == "ack"
                got = await watcher_b.recv_type("top", where=lambda m: m["total"] == 2)
                assert [e["user_id"] for e in got["entries"]] == ["bob", "alice"]
                # both processes agree on the board and its seq
                async with httpx.AsyncClient(base_url=url_a) as a:
                    page_a = await top(a)
                page_b = await top(b)
                assert page_a == page_b
                assert page_a["seq"] >= got["seq"]
    assert await pool.fetchval("SELECT count(*) FROM game_sessions") == 2


async def test_stalled_socket_does_not_delay_others_and_is_closed_1013(
    make_server: Any, keys: ApiKeys, make_client: Any
) -> None:
    # 16 kB kernel send buffers (instead of loopback's auto-tuned 4 MB) so that the stall shows within seconds
    server = await make_server(slow_socket_timeout_s=1.0, push_interval_ms=20, send_buffer=16384)
    api = make_client(server, keys.submit)
    admin = make_client(server, keys.admin)
    # Big snapshots (about 17 kB) on several boards: a socket that stops reading falls behind quickly.
    boards = [f"big{b}" for b in range(4)]
    users = [f"{'u' * 61}{i:03d}" for i in range(100)]
    for board in boards:
        await create_board(admin, board)
    async with ws_connect(server, keys.submit) as feeder:
        await ws_submit_many(
            feeder,
            (
                {"user_id": u, "score": 1000 + i, "board": b, "display_name": "n" * 64}
                for b in boards
                for i, u in enumerate(users)
            ),
        )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(server.rsplit(":", 1)[1])))
    stalled_conn = await connect(ws_url(server), sock=sock, max_size=None, ping_interval=None, close_timeout=5)
    stalled = WS(stalled_conn)
    try:
        for board in boards:
            await subscribe_top(stalled, board, limit=100)
        stalled_conn.transport.pause_reading()  # never reads again (until the end)

        stop = asyncio.Event()

        async def load() -> None:  # keeps every board changing, so the stalled socket keeps being pushed to
            async with ws_connect(server, keys.submit) as feeder:
                n = 0
                # (`stop` as well as the cancel: Python 3.11's wait_for, under ws.recv, can lose a cancellation
                # that arrives as its frame does, and this loop would then never end)
                while not stop.is_set():
                    n += 1
                    await ws_submit_many(
                        feeder,
                        ({"user_id": users[(n + k) % 100], "score": n, "board": b} for k, b in enumerate(boards)),
                    )

        loader = asyncio.create_task(load())
        try:
            async with ws_connect(server) as healthy:
                await subscribe_top(healthy, "global", limit=10)
                latencies = []
                started = time.monotonic()
                i = 0
                while time.monotonic() - started < 5.0:
                    i += 1
                    sent = time.monotonic()
                    await submit(api, "probe", 1)
                    await healthy.recv_type("top", within=5, where=lambda m, i=i: m["entries"][0]["score"] == i)
                    latencies.append(time.monotonic() - sent)
                    await asyncio.sleep(0.05)
                assert len(latencies) >= 10, latencies
                assert max(latencies) < 1.0, latencies
        finally:
            stop.set()
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader

        stalled_conn.transport.resume_reading()
        code = await stalled.expect_close(within=20)
        assert code == 1013
    finally:
        await stalled_conn.close()


def _tcp_between(local_port: int, remote_port: int) -> list[tuple[str, int]]:
    """This host's TCP sockets (IPv4) from `local_port` to `remote_port`: (state, bytes queued to send)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
            found.append((state, int(queues.split(":")[0], 16)))
    return found


async def test_a_socket_that_never_reads_again_is_cut_after_its_1013(
    make_server: Any, keys: ApiKeys, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 1013 close cannot reach a peer that does not read; the server then resets the connection, so the
    kernel does not keep the unread pushes (megabytes per socket on loopback) in an orphaned socket for as long
    as the peer keeps its end open: outside the server's file descriptors and its connection cap."""
    monkeypatch.setattr(outbox, "ABORT_AFTER", 0.5)
    server = await make_server(slow_socket_timeout_s=0.5, push_interval_ms=20, send_buffer=16384)
    port = int(server.rsplit(":", 1)[1])
    api = make_client(server, keys.submit)
    users = [f"{'u' * 61}{i:03d}" for i in range(100)]
    async with ws_connect(server, keys.submit) as feeder:
        await ws_submit_many(
            feeder, ({"user_id": u, "score": i, "display_name": "n" * 64} for i, u in enumerate(users))
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    mine = sock.getsockname()[1]
    stalled = await connect(ws_url(server), sock=sock, max_size=None, ping_interval=None, close_timeout=1)
    try:
        await subscribe_top(WS(stalled), "global", limit=100)
        stalled.transport.pause_reading()  # never reads again
        assert _tcp_between(port, mine), "the server's end of the connection"
        n = 0
        deadline = time.monotonic() + 20
        while _tcp_between(port, mine):  # every change is a ~17 kB push the socket does not read
            assert time.monotonic() < deadline, _tcp_between(port, mine)
            n += 1
            await submit(api, users[n % 100], 1000 + n)
            await asyncio.sleep(0.02)

        async def released() -> None:
            assert not runtime_of(server).sockets.open

        await eventually(released, within=5)  # and the server let go of it
    finally:
        stalled.transport.abort()


async def _subscribers(rds: Any, channel: str) -> int:
    """How many connections are subscribed to `channel` on the node that serves it."""
    if isinstance(rds, RedisCluster):
        node = rds.get_node_from_key(channel)
        found = await rds.execute_command("PUBSUB SHARDNUMSUB", channel, target_nodes=node)
    else:
        found = await rds.execute_command("PUBSUB NUMSUB", channel)
    return int(dict(found)[channel])


async def test_a_process_subscribes_only_to_the_boards_its_sockets_follow(
    make_server: Any, keys: ApiKeys, make_client: Any, rds: Any
) -> None:
    server = await make_server(unsubscribe_grace_s=0.5)
    hub = runtime_of(server).hub
    admin = make_client(server, keys.admin)
    await create_board(admin, "quiet")
    followed, quiet = channel_of("global"), channel_of("quiet")
    assert not hub.watching("global") and await _subscribers(rds, followed) == 0
    async with ws_connect(server) as ws:
        await subscribe_top(ws)
        await ws.reply_to({"type": "subscribe", "topics": ["rank"], "user_id": "ann"})

        async def subscribed() -> None:
            assert hub.watching("global") and await _subscribers(rds, followed) == 1

        await eventually(subscribed, within=5, interval=0.02)
        assert not hub.watching("quiet") and await _subscribers(rds, quiet) == 0  # nothing of it reaches us
        await ws.reply_to({"type": "unsubscribe", "topics": ["top"]})
        await asyncio.sleep(0.8)
        assert hub.watching("global")  # the rank subscription still follows the board
    await asyncio.sleep(0.2)
    assert await _subscribers(rds, followed) == 1  # within the grace period: kept

    async def left() -> None:
        assert not hub.watching("global") and await _subscribers(rds, followed) == 0

    await eventually(left, within=5, interval=0.05)
