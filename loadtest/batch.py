"""Batch submissions on the wire (issue #11): encoder, decoder, and the probe that tells if a server has them.

REST: ``POST /api/leaderboard/submit/batch`` with ``{"items": [{user_id, score, board?, session_id?,
display_name?}, ...]}`` (at most 500 items), answered ``{"results": [...]}`` in item order. WebSocket: the frame
``{"type": "submit", "ref": R, "items": [...]}``, answered by one ``{"type": "ack", "ref": R, "results": [...]}``.
Each result is either an ack ``{index, accepted, duplicate, board, user_id, score, rank, session_id}`` or a
refusal ``{index, error: {code, detail}}``; one bad item does not fail the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

MAX_ITEMS = 500
REST_PATH = "/api/leaderboard/submit/batch"


class BatchFormatError(ValueError):
    """A batch answer that does not follow the contract (wrong length, order or shape)."""


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    ack: dict[str, Any] | None  # the item's ack: accepted, duplicate, board, user_id, score, rank, session_id
    error_code: str | None = None
    error_detail: str | None = None


def encode_rest(items: list[dict[str, Any]]) -> bytes:
    if not 0 < len(items) <= MAX_ITEMS:
        raise ValueError(f"a batch holds 1..{MAX_ITEMS} items, not {len(items)}")
    return orjson.dumps({"items": items})


def encode_ws(ref: int | str, items: list[dict[str, Any]]) -> bytes:
    if not 0 < len(items) <= MAX_ITEMS:
        raise ValueError(f"a batch holds 1..{MAX_ITEMS} items, not {len(items)}")
    return orjson.dumps({"type": "submit", "ref": ref, "items": items})


def decode_results(msg: Any, n_items: int) -> list[ItemResult]:
    """The per-item results of a REST body or a WebSocket ack, checked against the contract."""
    results = msg.get("results") if isinstance(msg, dict) else None
    if not isinstance(results, list):
        raise BatchFormatError("no results list")
    if len(results) != n_items:
        raise BatchFormatError(f"{len(results)} results for {n_items} items")
    out: list[ItemResult] = []
    for i, r in enumerate(results):
        if not isinstance(r, dict) or r.get("index") != i:
            raise BatchFormatError(f"result {i} is not for item {i}: {str(r)[:100]}")
        err = r.get("error")
        if err is not None:
            code = err.get("code") if isinstance(err, dict) else None
            detail = err.get("detail") if isinstance(err, dict) else None
            out.append(ItemResult(i, None, str(code), None if detail is None else str(detail)))
        elif "score" in r and "duplicate" in r:
            out.append(ItemResult(i, r))
        else:
            raise BatchFormatError(f"result {i} is neither an ack nor an error: {str(r)[:100]}")
    return out


def unsupported_note(transport: str, status: int | None, answer: Any) -> str | None:
    """None when a probe's answer shows batch support, else why the scenario is skipped.

    The probe sends one item for a board that does not exist, so a server with batches answers a result list
    (with a per-item refusal) and writes nothing; one without answers 404/405 (REST) or an error frame (WS).
    """
    if transport == "rest":
        if status == 200 and isinstance(answer, dict) and isinstance(answer.get("results"), list):
            return None
        return f"POST {REST_PATH} answered HTTP {status}: the server has no batch submissions yet"
    if isinstance(answer, dict) and answer.get("type") == "ack" and isinstance(answer.get("results"), list):
        return None
    code = answer.get("code") if isinstance(answer, dict) else None
    return f"a WebSocket submit frame with items was answered {code or str(answer)[:80]!r}: no batch submissions yet"
