"""Log lines: uvicorn's `color_message` extra (the message again, with ANSI escapes) is not printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from leaderboard.logs import configure_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "human"])
def test_uvicorn_color_message_is_dropped(captured: io.StringIO, fmt: str) -> None:
    configure_logging("INFO", fmt, stream=captured)
    # What uvicorn logs at start-up (uvicorn/server.py).
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)",
        "http",
        "127.0.0.1",
        8000,
        extra={"color_message": "Uvicorn running on \x1b[1m%s://%s:%d\x1b[0m (Press CTRL+C to quit)", "board": "b"},
    )
    line = captured.getvalue().strip()
    assert "color_message" not in line and "\x1b" not in line and "\\u001b" not in line
    if fmt == "json":
        record = json.loads(line)
        assert record["msg"] == "Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)"
        assert record["board"] == "b"  # other extra fields are kept
    else:
        assert line.endswith("Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)  board=b")
