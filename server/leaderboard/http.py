"""REST transport: parse the request, call the service, map errors to RFC 9457 problem responses.

The routes (paths, methods, OpenAPI description) are listed once, in openapi.py's ROUTES; `handlers()` gives
the function behind each route name.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route

from .auth import Authenticator, Principal
from .errors import CODES, Invalid, NotFound, Refused, TooMany, Unauthorized, problem_body
from .limits import retry_after
from .protocol import (
    BOARD_ID_PATTERN,
    BOARD_ID_RULE,
    TEXT_PATTERN,
    TEXT_RULE,
    USER_ID_PATTERN,
    USER_ID_RULE,
    USER_IDS_MAX,
    BanBody,
    BatchBody,
    BoardCreate,
    Submission,
    VoidBody,
    describe,
    parse_items,
)
from .service import Service
from .settings import Settings

MAX_BODY = 16 * 1024
MAX_BATCH_BODY = 1024 * 1024  # 500 items of up to ~2 KB each
HOT = ("submit", "submit_batch", "top", "rank")  # routes answered by Direct (below), the handlers' names
MAX_OFFSET = 10_000_000
M = TypeVar("M", bound=BaseModel)
_BOARD = re.compile(BOARD_ID_PATTERN)
_USER = re.compile(USER_ID_PATTERN)
_TEXT = re.compile(TEXT_PATTERN)
_INT = re.compile(r"-?[0-9]{1,19}")  # (fullmatch; ASCII digits only)


class Context(Protocol):
    """What the REST handlers need from the app's lifespan."""

    @property
    def settings(self) -> Settings: ...
    @property
    def service(self) -> Service: ...
    @property
    def auth(self) -> Authenticator: ...


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(exc: Refused, headers: Mapping[str, str] | None = None) -> Response:
    more = {"errors": exc.errors} if isinstance(exc, Invalid) and exc.errors else {}
    if exc.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="leaderboard"'}
    if isinstance(exc, TooMany) and exc.retry_after is not None:
        headers = {**(headers or {}), "Retry-After": retry_after(exc.retry_after)}
    body = problem_body(exc.status, exc.code, exc.detail, **more)
    return Response(body, exc.status, headers=headers, media_type="application/problem+json")


def refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return problem(exc)


def http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = CODES.get(exc.status_code, "error")
    detail = exc.detail if exc.status_code != 404 else "no such route"
    return problem(Refused(str(detail), code=code, status=exc.status_code), exc.headers)


async def body_of(request: Request, model: type[M], max_body: int = MAX_BODY) -> M:
    """Read and validate a JSON body, or raise Refused (413 / 415 / 400 / 422)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise Refused("send the body as application/json", status=415, code="unsupported_media_type")
    declared = request.headers.get("content-length")
    too_big = Refused(f"body is larger than {max_body} bytes", status=413, code="payload_too_large")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise too_big
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_body:
            raise too_big
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refused("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Invalid("body must be a JSON object", [{"loc": ["body"], "msg": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise describe(exc) from None


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _INT.fullmatch(raw):  # (int() would also take "5_0", " 5", "+5" and other scripts' digits)
        raise Invalid(f"{name}: must be an integer", [{"loc": ["query", name], "msg": "not an integer"}])
    value = int(raw)
    if not lo <= value <= hi:
        raise Invalid(
            f"{name}: must be between {lo} and {hi}", [{"loc": ["query", name], "msg": f"between {lo} and {hi}"}]
        )
    return value


def board_param(request: Request) -> str:
    board = request.query_params.get("board", "global")
    if not _BOARD.fullmatch(board):
        raise Invalid(f"board: {BOARD_ID_RULE}", [{"loc": ["query", "board"], "msg": BOARD_ID_RULE}])
    return board


def season_param(request: Request, name: str = "season") -> int | None:
    """A season number in the query (`season`: absent = the live one; `before` of /seasons: the first page)."""
    if request.query_params.get(name) is None:
        return None
    return int_param(request, name, 1, 1, 2**31 - 1)


def board_path(request: Request) -> str:
    board_id: str = request.path_params["board_id"]
    if not _BOARD.fullmatch(board_id):
        raise NotFound("no such board")
    return board_id


def reason_param(request: Request, default: str | None = None) -> str:
    """`reason` in the query (an action without a body): 1-500 characters of shown text."""
    raw = request.query_params.get("reason", default)
    text = (raw or "").strip()
    if raw is None or not 1 <= len(text) <= 500 or not _TEXT.fullmatch(text):
        msg = f"1-500 characters; {TEXT_RULE}"
        raise Invalid(f"reason: {msg}", [{"loc": ["query", "reason"], "msg": msg}])
    return text


def optional_board(request: Request) -> str | None:
    return board_param(request) if "board" in request.query_params else None


def user_param(user_id: str, where: str = "path") -> str:
    if not _USER.fullmatch(user_id):
        raise Invalid(f"user_id: {USER_ID_RULE}", [{"loc": [where, "user_id"], "msg": USER_ID_RULE}])
    return user_id


def user_ids_param(request: Request) -> list[str]:
    """`user_ids=a,b,c` (or repeated): 1 to USER_IDS_MAX distinct valid ids, duplicates collapsed, in order."""
    raw = ",".join(request.query_params.getlist("user_ids"))
    if not raw:
        raise Invalid("user_ids: required, 1-100 comma-separated user ids", [{"loc": ["query", "user_ids"],
                      "msg": "required"}])  # fmt: skip
    ids = list(dict.fromkeys(raw.split(",")))
    bad = next((u for u in ids if not _USER.fullmatch(u)), None)
    if bad is not None:
        raise Invalid(
            f"user_ids: {bad[:70]!r} is not a user id ({USER_ID_RULE})",
            [{"loc": ["query", "user_ids"], "msg": f"each must be {USER_ID_RULE}"}],
        )
    if len(ids) > USER_IDS_MAX:
        raise Invalid(
            f"user_ids: at most {USER_IDS_MAX} different ids, got {len(ids)}",
            [{"loc": ["query", "user_ids"], "msg": f"at most {USER_IDS_MAX}"}],
        )
    return ids


Endpoint = Callable[[Request], Awaitable[Response]]


def handlers(context: Callable[[], Context]) -> dict[str, Endpoint]:
    """The REST endpoints by route name; `context()` gives what the lifespan started."""

    async def who(request: Request, read: bool) -> Principal:
        ctx = context()
        principal = await ctx.auth.from_header(
            request.headers.get("authorization"), request.headers.get("x-api-key"),
            request.client.host if request.client else None,
        )  # fmt: skip
        if read and not principal.can_read(ctx.settings.public_read):
            raise Unauthorized("reads need an API key or a player token on this server")
        return principal

    async def submit(request: Request) -> Response:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Unauthorized("submitting needs an API key or a player token")
        sub = await body_of(request, Submission)
        return JSON(await context().service.submit(principal, sub))

    async def submit_batch(request: Request) -> Response:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Unauthorized("submitting needs an API key or a player token")
        body = await body_of(request, BatchBody, MAX_BATCH_BODY)
        limit = context().settings.batch_items_max
        if len(body.items) > limit:
            raise Invalid(f"items: at most {limit} in one request, got {len(body.items)}")
        ack = await context().service.submit_batch(principal, parse_items(body.items))
        rate = context().settings.player_submit_rate
        if rate and any(r.error is not None and r.error.code == TooMany.code for r in ack.results):
            # items over their player's rate are refused one by one; a GCRA wait is at most one interval
            return JSON(ack, headers={"Retry-After": retry_after(1 / rate)})
        return JSON(ack)

    async def top(request: Request) -> Response:
        await who(request, read=True)
        board = board_param(request)
        limit = int_param(request, "limit", 10, 1, 100)
        offset = int_param(request, "offset", 0, 0, MAX_OFFSET)
        season = season_param(request)
        body = await context().service.top_json(board, limit, offset, season)
        return Response(body, media_type="application/json")

    async def rank(request: Request) -> Response:
        await who(request, read=True)
        user = user_param(request.path_params["user_id"])
        board = board_param(request)
        around = int_param(request, "around", 0, 0, 25)
        return JSON(await context().service.rank(board, user, around, season_param(request)))

    async def ranks(request: Request) -> Response:
        await who(request, read=True)
        board = board_param(request)
        user_ids = user_ids_param(request)
        return JSON(await context().service.players(board, user_ids, season_param(request)))

    async def seasons(request: Request) -> Response:
        await who(request, read=True)
        board, limit = board_path(request), int_param(request, "limit", 100, 1, 1000)
        return JSON(await context().service.seasons(board, limit, season_param(request, "before")))

    async def reset(request: Request) -> Response:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Unauthorized("resetting a board needs an admin key")
        return JSON(await context().service.reset(principal, board_path(request), season_param(request)))

    async def list_boards(request: Request) -> Response:
        await who(request, read=True)
        return JSON({"boards": [b.public() for b in await context().service.boards()]})

    async def get_board(request: Request) -> Response:
        await who(request, read=True)
        service = context().service
        info = await service.board(board_path(request), fresh=True)  # its live season as Postgres has it
        return JSON(info.detail(await service.board_total(info)))

    async def create_board(request: Request) -> Response:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Unauthorized("creating boards needs an admin key")
        spec = await body_of(request, BoardCreate)
        info = await context().service.create_board(principal, spec)
        return JSON(info.public(), status_code=201)

    # ---- moderation: admin (submissions: admin and read keys); 401 without a credential -------------------

    async def credential(request: Request, what: str) -> Principal:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Unauthorized(f"{what} needs an admin key")
        return principal

    async def void(request: Request) -> Response:
        principal = await credential(request, "voiding a submission")
        body = await body_of(request, VoidBody)
        return JSON(await context().service.moderator.void(principal, body.session_id, body.reason))

    async def restore(request: Request) -> Response:
        principal = await credential(request, "restoring a submission")
        body = await body_of(request, VoidBody)
        return JSON(await context().service.moderator.restore(principal, body.session_id, body.reason))

    async def remove_entry(request: Request) -> Response:
        principal = await credential(request, "removing an entry")
        user, board, reason = user_param(request.path_params["user_id"]), board_param(request), reason_param(request)
        return JSON(await context().service.moderator.remove(principal, board, user, reason))

    async def ban(request: Request) -> Response:
        principal = await credential(request, "banning a player")
        user = user_param(request.path_params["user_id"])
        body = await body_of(request, BanBody)
        return JSON(await context().service.moderator.ban(principal, user, body.reason))

    async def unban(request: Request) -> Response:
        principal = await credential(request, "lifting a ban")
        user = user_param(request.path_params["user_id"])
        return JSON(await context().service.moderator.unban(principal, user, reason_param(request, "ban lifted")))

    async def audit(request: Request) -> Response:
        principal = await credential(request, "reading the audit log")
        limit = int_param(request, "limit", 50, 1, 500)
        before = int_param(request, "before", 0, 1, 2**63 - 1) if "before" in request.query_params else None
        user = request.query_params.get("user_id")
        user = user_param(user, "query") if user is not None else None
        return JSON(await context().service.moderator.audit(principal, limit, before, user))

    async def submissions(request: Request) -> Response:
        principal = await who(request, read=False)
        if principal.role == "anonymous":
            raise Unauthorized("a player's submissions are for admin and read keys")
        user, board = user_param(request.path_params["user_id"]), optional_board(request)
        limit = int_param(request, "limit", 50, 1, 500)
        return JSON(await context().service.moderator.submissions(principal, user, board, limit))

    return {
        "submit": submit, "submit_batch": submit_batch, "top": top, "rank": rank, "list_boards": list_boards,
        "get_board": get_board, "create_board": create_board, "seasons": seasons, "reset": reset,
        "void": void, "restore": restore, "remove_entry": remove_entry, "ban": ban, "unban": unban, "audit": audit,
        "submissions": submissions,
        "ranks": ranks,
    }  # fmt: skip


class Direct:
    """The hottest routes (submit, top, rank), answered with the same handlers but without Starlette's router,
    exception middleware and request/response wrappers, which cost more than the work on a cached read. Sits
    inside HttpMiddleware (request ids, metrics) and CORS; a Refused becomes its problem response here, any
    other exception goes on to the app's error handler. Every other request goes on to the app."""

    def __init__(self, app: Any, routes: Sequence[Route]) -> None:
        self.app, self.routes = app, [(r, (r.methods or set()) - {"HEAD"}) for r in routes]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for route, methods in self.routes:
                if scope["method"] in methods:
                    match, child = route.matches(scope)
                    if match is Match.FULL:
                        scope.update(child)
                        scope["route"] = route  # what Starlette's router sets: metrics label by its template
                        try:
                            response = await route.endpoint(Request(scope, receive))
                        except Refused as exc:
                            response = problem(exc)
                        except ClientDisconnect:  # gone while sending its body: nobody to answer
                            return
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)
