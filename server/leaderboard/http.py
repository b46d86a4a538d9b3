"""REST transport: parse the request, call the service, map errors to RFC 9457 problem responses."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .protocol import BoardCreate, Refused, Submission, describe

MAX_BODY = 16 * 1024
M = TypeVar("M", bound=BaseModel)
_BOARD = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_USER = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")

_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 413: "Payload too large", 415: "Unsupported media type", 422: "Unprocessable content",
    500: "Internal server error", 503: "Service unavailable",
}  # fmt: skip
_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.__pydantic_serializer__.to_json(content)
        return orjson.dumps(content)


def problem(status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{code.replace('_', '-')}", "title": _TITLES.get(status, "Error"), "status": status,
        "detail": detail, "code": code,
    }  # fmt: skip
    if errors is not None:
        body["errors"] = errors
    headers = {"WWW-Authenticate": 'Bearer realm="leaderboard"'} if status == 401 else None
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/problem+json")


def refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return problem(exc.status, exc.code, exc.detail)


def http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    detail = exc.detail if exc.status_code != 404 else "no such route"
    return problem(exc.status_code, code, str(detail))


async def body_of(request: Request, model: type[M]) -> M:
    """Read and validate a JSON body, or raise Refused (413 / 415 / 400 / 422)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise Refused(415, "unsupported_media_type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise Refused(413, "payload_too_large", f"body is larger than {MAX_BODY} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise Refused(413, "payload_too_large", f"body is larger than {MAX_BODY} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refused(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Refused(422, "validation_error", "body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail, errors = describe(exc)
        raise _Invalid(detail, errors) from None


class _Invalid(Refused):
    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(422, "validation_error", detail)
        self.errors = errors


def invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Invalid)
    return problem(422, "validation_error", exc.detail, exc.errors)


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Invalid(f"{name}: must be an integer", [{"loc": ["query", name], "msg": "not an integer"}]) from None
    if not lo <= value <= hi:
        raise _Invalid(
            f"{name}: must be between {lo} and {hi}",
            [{"loc": ["query", name], "msg": f"between {lo} and {hi}"}],
        )
    return value


def board_param(request: Request) -> str:
    board = request.query_params.get("board", "global")
    if not _BOARD.match(board):
        raise _Invalid("board: not a valid board id", [{"loc": ["query", "board"], "msg": "invalid board id"}])
    return board


def user_param(user_id: str) -> str:
    if not _USER.match(user_id):
        raise _Invalid(
            "user_id: 1-64 characters of A-Z a-z 0-9 _ . : @ -",
            [{"loc": ["path", "user_id"], "msg": "invalid"}],
        )
    return user_id


Endpoint = Callable[[Request], Awaitable[Response]]


def make_routes() -> dict[str, Endpoint]:
    """The REST endpoints; each finds the services on request.app.state. Routes and OpenAPI: app.py."""

    async def who(request: Request, read: bool) -> Any:
        svc = request.app.state.services
        principal = await svc.auth.from_header(request.headers.get("authorization"))
        if read and not principal.can_read(svc.settings.public_read):
            raise Refused(401, "unauthorized", "reads need an API key or a player token on this server")
        return principal

    async def submit(request: Request) -> Response:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Refused(401, "unauthorized", "submitting needs an API key or a player token")
        sub = await body_of(request, Submission)
        return JSON(await request.app.state.services.lb.submit(principal, sub))

    async def top(request: Request) -> Response:
        await who(request, read=True)
        board = board_param(request)
        limit = int_param(request, "limit", 10, 1, 100)
        offset = int_param(request, "offset", 0, 0, 10_000_000)
        return JSON(await request.app.state.services.lb.top(board, limit, offset))

    async def rank(request: Request) -> Response:
        await who(request, read=True)
        user = user_param(request.path_params["user_id"])
        board = board_param(request)
        around = int_param(request, "around", 0, 0, 25)
        return JSON(await request.app.state.services.lb.rank(board, user, around))

    async def list_boards(request: Request) -> Response:
        await who(request, read=True)
        return JSON({"boards": [b.public() for b in await request.app.state.services.lb.boards()]})

    async def get_board(request: Request) -> Response:
        await who(request, read=True)
        board_id = request.path_params["board_id"]
        if not _BOARD.match(board_id):
            raise Refused(404, "not_found", "no such board")
        info = await request.app.state.services.lb.board(board_id)
        return JSON({**info.public(), "total": await request.app.state.services.lb.board_total(info)})

    async def create_board(request: Request) -> Response:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Refused(401, "unauthorized", "creating boards needs an admin key")
        spec = await body_of(request, BoardCreate)
        info = await request.app.state.services.lb.create_board(principal, spec)
        return JSON(info.public(), status_code=201)

    return {
        "submit": submit, "top": top, "rank": rank, "list_boards": list_boards, "get_board": get_board,
        "create_board": create_board,
    }  # fmt: skip
