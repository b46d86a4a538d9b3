"""Every error the service raises on purpose, and what each becomes on the wire. No I/O.

The core raises; the transports map. One tree, as python-websockets keeps its exceptions in one module:

    Refused(status, code, detail)          a request refused; nothing was written
        Unauthorized      401 unauthorized          no or bad credential
        Forbidden         403 forbidden             the credential may not do this
        NotFound          404 not_found             unknown board, player without an entry, route
        Conflict          409 conflict / idempotency_conflict
        Invalid           422 validation_error      a bad body, frame or parameter (with `errors`)
        OutOfRange        422 out_of_range          the board value would leave ±(2^53-1)
        TooMany           429 too_many_subscriptions / rate_limited
        Unavailable       503 unavailable           Postgres (or, for some reads, Redis) did not answer
    Close(code, reason)                    ends a WebSocket with a close code (1008, 1009, ...)

HTTP (`http.py`): status and an RFC 9457 problem body with `code`. WebSocket (`ws.py`): an `error` frame
`{ref, code, detail}` (the socket stays open), or the close code of a `Close`.
"""

from __future__ import annotations

from typing import Any

import orjson

# WebSocket close codes (RFC 6455 section 7.4.1, IANA registry)
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # authentication failed, submit without rights, revoked key, rate limit persisted
CLOSE_TOO_BIG = 1009  # frame larger than max_frame_bytes
CLOSE_ERROR = 1011  # unexpected server error
CLOSE_RESTART = 1012  # server restarting (drain)
CLOSE_BEHIND = 1013  # the socket did not read its pushes in time

TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    408: "Request timeout", 409: "Conflict", 413: "Payload too large", 414: "URI too long",
    415: "Unsupported media type", 422: "Unprocessable content", 426: "Upgrade required", 429: "Too many requests",
    431: "Request header fields too large", 500: "Internal server error", 503: "Service unavailable",
}  # fmt: skip


# The `code` of a refusal known only by its status (Starlette's HTTPException, websockets' handshake)
CODES = {
    400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
    426: "upgrade_required", 500: "internal_error",
}  # fmt: skip


def problem_body(status: int, code: str, detail: str, **more: Any) -> bytes:
    """The RFC 9457 problem document of a refusal (application/problem+json), with our `code`."""
    body = {"type": f"/problems/{code.replace('_', '-')}", "title": TITLES.get(status, "Error"), "status": status,
            "detail": detail, "code": code, **more}  # fmt: skip
    return orjson.dumps(body)


class Refused(Exception):
    """A request the service refuses: an HTTP problem (status, code) or a WebSocket error frame."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.detail!r})"


class Unauthorized(Refused):
    status, code = 401, "unauthorized"


class Forbidden(Refused):
    status, code = 403, "forbidden"


class NotFound(Refused):
    status, code = 404, "not_found"


class Conflict(Refused):
    status, code = 409, "conflict"


class Invalid(Refused):
    """A bad body, frame or parameter. `errors` lists each problem as {"loc": [...], "msg": "..."}."""

    status, code = 422, "validation_error"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors if errors is not None else []


class OutOfRange(Refused):
    status, code = 422, "out_of_range"


class TooMany(Refused):
    """Over a rate: `retry_after` seconds until a retry can succeed (the Retry-After header), when known."""

    status, code = 429, "rate_limited"

    def __init__(self, detail: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class Unavailable(Refused):
    status, code = 503, "unavailable"


class Close(Exception):
    """End the WebSocket with this close code (after the replies already queued)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason[:120]  # a close reason must fit in 123 bytes
