"""Layer: pipe.py, the hot path's pipelined Redis connection, against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from leaderboard.pipe import Pipe
from support.services import Services


async def test_replies_in_order_for_concurrent_callers(services: Services, clean: None) -> None:
    pipe = Pipe(services.redis_url)
    try:
        await pipe.call("SET", "pipe:k", "v")
        got = await asyncio.gather(*(pipe.call("ECHO", f"m{i}") for i in range(200)), pipe.call("GET", "pipe:k"))
        assert got == [*(f"m{i}" for i in range(200)), "v"]
        assert await pipe.call("INCR", "pipe:n") == 1 and await pipe.call("GET", "nope") is None
        assert await pipe.call("EVAL", "return {1, 'a', false}", 0) == [1, "a", None]
        with pytest.raises(ResponseError):
            await pipe.call("INCR", "pipe:k")  # not a number
        assert await pipe.call("PING") == "PONG"  # still usable after an error reply
    finally:
        await pipe.close()


async def test_the_url_database_is_selected(services: Services, clean: None, rds: Any) -> None:
    pipe = Pipe(services.redis_url)
    try:
        await pipe.call("SET", "pipe:db", "here")
        assert await rds.get("pipe:db") == "here"  # the test client uses the URL's database too
    finally:
        await pipe.close()


async def test_a_stopped_redis_fails_fast_and_a_restarted_one_is_used_again(private_redis: Any) -> None:
    pipe = Pipe(private_redis.url, timeout=1.0)
    try:
        assert await pipe.call("PING") == "PONG"
        private_redis.stop()
        with pytest.raises(ConnectionError):
            await pipe.call("PING")
        private_redis.start()
        assert await pipe.call("PING") == "PONG"
    finally:
        await pipe.close()


async def test_a_hung_redis_times_out_instead_of_hanging(private_redis: Any) -> None:
    pipe = Pipe(private_redis.url, timeout=0.5)
    try:
        await pipe.call("PING")
        slow = asyncio.ensure_future(pipe.call("BLPOP", "pipe:never", "5"))  # no answer for 5 s
        queued = asyncio.ensure_future(pipe.call("PING"))  # behind it on the same connection
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slow, 3)
        with pytest.raises(TimeoutError):
            await queued
        assert await pipe.call("PING") == "PONG"  # a new connection
    finally:
        await pipe.close()
