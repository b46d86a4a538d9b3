"""Checks of our own for the schemathesis run in test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Not a test module: schemathesis imports it in its own process.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
# What a schema-valid request may still get: no or a refused credential, a board or player that does not
# exist, a board id that exists already, rate limits, and a board value that the submission would push out of
# ±(2^53-1) (it depends on the board's current value, which no schema can say).
VALID_MAY_GET = {401, 403, 404, 409, 429}


def _problem(response: Any) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


@schemathesis.check
def errors_are_problem_details(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx answer is an RFC 9457 problem (application/problem+json) with our `code`."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return None
    ctype = response.headers.get("content-type", [""])
    ctype = (ctype[0] if isinstance(ctype, list) else ctype).split(";")[0].strip()
    if ctype != "application/problem+json":
        raise AssertionError(f"{response.status_code} answered as {ctype!r}, not application/problem+json")
    body = _problem(response)
    if body is None or not PROBLEM_FIELDS <= body.keys():
        raise AssertionError(f"{response.status_code} problem body lacks {sorted(PROBLEM_FIELDS)}: {response.text!r}")
    if body["status"] != response.status_code:
        raise AssertionError(f"problem status {body['status']} differs from the HTTP status {response.status_code}")
    return None


@schemathesis.check
def valid_requests_are_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, except a 422 `out_of_range` (the value depends on the board), a
    422 on a cron expression's field ranges and on metadata's encoded size (no JSON Schema keyword says them)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not 400 <= response.status_code < 500:
        return None
    if response.status_code in VALID_MAY_GET:
        return None
    body = _problem(response) or {}
    if response.status_code == 422 and body.get("code") == "out_of_range":
        return None
    locs = [e.get("loc") for e in body.get("errors", [])]
    if response.status_code == 422 and locs == [["reset"]]:
        return None  # a cron expression of the right shape whose fields croniter refuses ("0 0 99 * *")
    if response.status_code == 422 and locs and all(loc and loc[-1] == "metadata" for loc in locs):
        return None  # metadata over 1,024 bytes encoded, or spelling U+0000 (no JSON Schema keyword says either)
    raise AssertionError(f"a schema-valid request was refused with {response.status_code}: {response.text!r}")
