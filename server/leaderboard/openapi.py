"""Every HTTP route, listed once, and the OpenAPI 3.1 document generated from the list.

app.py builds the Starlette routes from ROUTES; the request and reply schemas come from the same models that
validate and encode them (protocol.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from . import __version__
from .http import MAX_OFFSET
from .protocol import (
    BOARD_ID_PATTERN,
    TEXT_PATTERN,
    USER_ID_PATTERN,
    USER_IDS_MAX,
    Ack,
    AuditPage,
    BanBody,
    BanReply,
    BatchAck,
    BatchBody,
    Board,
    BoardCreate,
    BoardDetail,
    BoardList,
    BoardSeasons,
    PlayerRank,
    PlayersPage,
    PlayerSubmissions,
    Problem,
    RemoveReply,
    ResetReply,
    Submission,
    TopPage,
    VoidBody,
    VoidReply,
)

PUBLIC, BEARER, NONE = "public", "bearer", "none"


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # query | path
    schema: dict[str, Any]
    description: str = ""
    required: bool = False  # (a path parameter always is)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str  # the handler's name (http.handlers() or app.py's operational endpoints)
    summary: str
    security: str = PUBLIC  # public: a credential is optional (reads); bearer: required; none: no auth at all
    body: type | None = None
    reply: type | None = None
    status: int = 200
    problems: tuple[int, ...] = ()
    params: tuple[Param, ...] = field(default_factory=tuple)
    content_type: str = "application/json"


def _int(lo: int, hi: int, default: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi, "default": default}


SEASON_Q = Param(
    "season",
    "query",
    {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "a season of the board (default: the live one); an ended season reads as it ended",
)
USER_P = Param("user_id", "path", {"type": "string", "pattern": USER_ID_PATTERN})
REASON = {"type": "string", "minLength": 1, "maxLength": 500, "pattern": TEXT_PATTERN}
_ID = USER_ID_PATTERN.strip("^$")
USER_IDS_PATTERN = f"^{_ID}(,{_ID}){{0,{USER_IDS_MAX - 1}}}$"
BOARD_Q = Param("board", "query", {"type": "string", "default": "global", "pattern": BOARD_ID_PATTERN}, "board id")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/leaderboard/submit", "submit", "Submit a score (acknowledged after the Postgres commit)",
          BEARER, Submission, Ack, problems=(400, 401, 403, 404, 409, 413, 415, 422, 503)),
    Route("POST", "/api/leaderboard/submit/batch", "submit_batch",
          "Submit many scores at once (a game server ending a match): each item validated and committed on its "
          "own, results in item order", BEARER, BatchBody, BatchAck, problems=(400, 401, 413, 415, 422, 503)),
    Route("GET", "/api/leaderboard/top", "top", "A page of the board, best first", reply=TopPage,
          problems=(401, 404, 422, 503),
          params=(BOARD_Q, Param("limit", "query", _int(1, 100, 10), "entries"),
                  Param("offset", "query", _int(0, MAX_OFFSET, 0), "entries to skip"), SEASON_Q)),
    Route("GET", "/api/leaderboard/rank/{user_id}", "rank", "A player's rank, score, percentile and neighbours",
          reply=PlayerRank, problems=(401, 404, 422, 503),
          params=(Param("user_id", "path", {"type": "string", "pattern": USER_ID_PATTERN}), BOARD_Q,
                  Param("around", "query", _int(0, 25, 0), "entries above and below to include"), SEASON_Q)),
    Route("GET", "/api/leaderboard/ranks", "ranks",
          "Friends: some players' entries ordered by rank, with their ranks on the whole board (absent ones left "
          "out)", reply=PlayersPage, problems=(401, 404, 422, 503),
          params=(BOARD_Q, Param("user_ids", "query", {"type": "string", "pattern": USER_IDS_PATTERN},
                                 f"comma-separated user ids, at most {USER_IDS_MAX} different ones (duplicates "
                                 "count once)", required=True), SEASON_Q)),
    Route("GET", "/api/leaderboards", "list_boards", "List boards", reply=BoardList, problems=(401, 503)),
    Route("POST", "/api/leaderboards", "create_board", "Create a board (admin)", BEARER, BoardCreate, Board, 201,
          (400, 401, 403, 409, 413, 415, 422, 503)),
    Route("GET", "/api/leaderboards/{board_id}", "get_board", "One board, with its entry count",
          reply=BoardDetail, problems=(401, 404, 503),
          params=(Param("board_id", "path", {"type": "string"}),)),
    Route("GET", "/api/leaderboards/{board_id}/seasons", "seasons",
          "A board's seasons, newest (the live one) first, with their winners; paged by `before`", reply=BoardSeasons,
          problems=(401, 404, 422, 503),
          params=(Param("board_id", "path", {"type": "string"}),
                  Param("limit", "query", _int(1, 1000, 100), "seasons per page (the live one included)"),
                  Param("before", "query", SEASON_Q.schema,
                        "only seasons numbered below this one (the `next` of the page before); absent: the first "
                        "page, which starts with the live season"))),
    Route("POST", "/api/leaderboards/{board_id}/reset", "reset", "End the live season now (admin)", BEARER,
          reply=ResetReply, problems=(401, 403, 404, 409, 422, 503),
          params=(Param("board_id", "path", {"type": "string"}),
                  Param("season", "query", SEASON_Q.schema,
                        "end this season only if it is still the live one (a safe retry): 409 otherwise"))),
    Route("POST", "/api/leaderboard/void", "void",
          "Void one submission (admin): kept in the log, the player's value recomputed without it", BEARER,
          VoidBody, VoidReply, problems=(400, 401, 403, 404, 409, 413, 415, 422, 503)),
    Route("POST", "/api/leaderboard/restore", "restore",
          "Undo a void (admin): the submission counts again, the player's value recomputed with it", BEARER,
          VoidBody, VoidReply, problems=(400, 401, 403, 404, 409, 413, 415, 422, 503)),
    Route("DELETE", "/api/leaderboard/entries/{user_id}", "remove_entry",
          "Remove a player's entry from a board's live season, voiding its submissions there (admin)", BEARER,
          reply=RemoveReply, problems=(401, 403, 404, 422, 503),
          params=(USER_P, BOARD_Q, Param("reason", "query", REASON, "why (kept in the audit log)", required=True))),
    Route("POST", "/api/players/{user_id}/ban", "ban",
          "Ban a player (admin): removed from every board, every later submission refused with 403 banned",
          BEARER, BanBody, BanReply, problems=(400, 401, 403, 409, 413, 415, 422, 503), params=(USER_P,)),
    Route("DELETE", "/api/players/{user_id}/ban", "unban",
          "Lift a ban (admin): the player's entries restored, recomputed from its non-voided log", BEARER,
          reply=BanReply, problems=(401, 403, 404, 422, 503),
          params=(USER_P, Param("reason", "query", {**REASON, "default": "ban lifted"}, "kept in the audit log"))),
    Route("GET", "/api/players/{user_id}/submissions", "submissions",
          "A player's logged submissions, newest first (admin and read keys)", BEARER, reply=PlayerSubmissions,
          problems=(401, 403, 422, 503),
          params=(USER_P, Param("board", "query", {"type": "string", "pattern": BOARD_ID_PATTERN}, "one board only"),
                  Param("limit", "query", _int(1, 500, 50), "submissions"))),
    Route("GET", "/api/audit", "audit", "Every moderation action, newest first (admin)", BEARER, reply=AuditPage,
          problems=(401, 403, 422, 503),
          params=(Param("limit", "query", _int(1, 500, 50), "entries"),
                  Param("before", "query", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        "only entries with a smaller id (the previous page's next_before)"),
                  Param("user_id", "query", {"type": "string", "pattern": USER_ID_PATTERN}, "one player's only"))),
    Route("GET", "/healthz", "healthz", "Liveness", NONE),
    Route("GET", "/readyz", "readyz", "Readiness: Postgres, Redis and migrations", NONE, problems=(503,)),
    Route("GET", "/metrics", "metrics", "Prometheus metrics", NONE, content_type="text/plain"),
    Route("GET", "/api/openapi.json", "openapi", "This document", NONE),
)  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    def schema_of(model: type) -> dict[str, Any]:
        found = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
        return _ref(model.__name__)

    op: dict[str, Any] = {"summary": route.summary, "operationId": route.name}
    if route.security == BEARER:
        op["security"] = [{"bearer": []}]
    elif route.security == PUBLIC:
        op["security"] = [{}, {"bearer": []}]
    if route.params:
        op["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema,
             **({"description": p.description} if p.description else {})}
            for p in route.params
        ]  # fmt: skip
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema_of(route.body)}}}
    ok: dict[str, Any] = {"description": "OK"}
    if route.reply is not None:
        ok["content"] = {route.content_type: {"schema": schema_of(route.reply)}}
    problem = {"description": "Problem details (RFC 9457)",
               "content": {"application/problem+json": {"schema": _ref("Problem")}}}  # fmt: skip
    # Any request that carries a credential may meet the failed-authentication slowdown (limits.py): 429.
    problems = sorted({*route.problems, 429}) if route.security != NONE else route.problems
    op["responses"] = {str(route.status): ok, **{str(s): problem for s in problems}}
    return op


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    schemas["Problem"] = TypeAdapter(Problem).json_schema()
    if "Entry" in schemas:  # MetaEntry, on the wire: an entry carries `metadata` when its value came with some
        schemas["Entry"]["properties"]["metadata"] = {
            "type": "object", "description": "the metadata of the submission that produced the value (absent: none)"
        }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leaderboard", "version": __version__,
                 "description": "Real-time leaderboard service. WebSocket protocol: see docs/protocol.md (/ws)."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "API key (lbk_…) or player JWT"}}},
    }  # fmt: skip
