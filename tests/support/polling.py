"""Waiting without sleeping longer than needed: poll a check until it passes or a deadline expires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0, interval: float = 0.05) -> Any:
    """Retry an async `check()` until it stops raising AssertionError; re-raise the last failure."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)
