"""Wire protocol: request bodies, WebSocket frames, error codes and close codes. No I/O.

Client -> server frames (JSON objects with a `type`; an optional `ref` is echoed in the reply):
    auth        {token}                                   -> auth {ok, role, user_id}
    submit      {user_id, score, board?, session_id?, display_name?}   -> ack {accepted, duplicate, board,
                                                                             user_id, score, rank, session_id}
    subscribe   {board?, topics: ["top"|"rank"], limit?, user_id?}     -> subscribed, then a top/rank push
    unsubscribe {board?, topics, user_id?}                             -> unsubscribed
    ping        {}                                                     -> pong
Server -> client pushes:
    top   {board, seq, total, entries: [{rank, user_id, display_name, score}]}   latest wins, debounced
    rank  {board, user_id, rank, previous_rank, score, seq}                       debounced
    error {ref, code, detail}                                                     the socket stays open
Close codes: 1000 normal, 1008 auth failed / submit without rights, 1009 frame too big, 1011 server error,
1012 server restarting (drain), 1013 socket fell behind (did not read its pushes in time).
See docs/protocol.md for the full contract.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from .ranking import MAX_VALUE

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_ERROR = 1011
CLOSE_RESTART = 1012
CLOSE_BEHIND = 1013

UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")]
BoardId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
Score = Annotated[StrictInt, Field(ge=-MAX_VALUE, le=MAX_VALUE)]
Ref = str | StrictInt | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Submission(Strict):
    """POST /api/leaderboard/submit body (and the fields of a `submit` frame)."""

    user_id: UserId
    score: Score
    board: BoardId = "global"
    session_id: uuid.UUID | None = None
    display_name: DisplayName | None = None


class BoardCreate(Strict):
    """POST /api/leaderboards body."""

    id: BoardId
    title: Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)] | None = None
    sort: Literal["desc", "asc"] = "desc"
    operator: Literal["incr", "best", "set"] = "incr"


class Entry(BaseModel):
    rank: int
    user_id: str
    display_name: str | None
    score: int


class Ack(BaseModel):
    accepted: bool = True
    duplicate: bool
    board: str
    user_id: str
    score: int
    rank: int | None
    session_id: uuid.UUID


class TopPage(BaseModel):
    board: str
    total: int
    seq: int
    entries: list[Entry]


class PlayerRank(BaseModel):
    board: str
    user_id: str
    display_name: str | None
    rank: int
    score: int
    total: int
    percentile: float
    around: list[Entry]


class Board(BaseModel):
    id: str
    title: str
    sort: Literal["desc", "asc"]
    operator: Literal["incr", "best", "set"]
    created_at: str
    total: int | None = None


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


# ---- WebSocket frames -------------------------------------------------------------------------------------


class Frame(Strict):
    ref: Annotated[str, StringConstraints(max_length=64)] | StrictInt | None = None


class AuthFrame(Frame):
    type: Literal["auth"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class SubmitFrame(Submission):
    """A `submit` frame is a Submission with a type and a ref: it goes to the writer as it is."""

    type: Literal["submit"]
    ref: Annotated[str, StringConstraints(max_length=64)] | StrictInt | None = None


Topic = Literal["top", "rank"]


class SubscribeFrame(Frame):
    type: Literal["subscribe", "unsubscribe"]
    board: BoardId = "global"
    topics: Annotated[list[Topic], Field(min_length=1, max_length=2)]
    limit: Annotated[StrictInt, Field(ge=1, le=100)] = 10
    user_id: UserId | None = None


class PingFrame(Frame):
    type: Literal["ping"]


ClientFrame = Frame | SubmitFrame

FRAMES: dict[str, type[ClientFrame]] = {
    "auth": AuthFrame,
    "submit": SubmitFrame,
    "subscribe": SubscribeFrame,
    "unsubscribe": SubscribeFrame,
    "ping": PingFrame,
}


class FrameError(Exception):
    """A bad client frame: answered with an `error` frame, the socket stays open."""

    def __init__(self, code: str, detail: str, ref: Ref = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.ref = code, detail, ref


def _ref_of(obj: dict[str, Any]) -> Ref:
    ref = obj.get("ref")
    if isinstance(ref, bool) or not isinstance(ref, str | int) or (isinstance(ref, str) and len(ref) > 64):
        return None
    return ref


def describe(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """One readable line plus the structured list, for problem bodies and error frames."""
    errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors)
    return detail, errors


def parse_frame(data: str | bytes) -> ClientFrame:
    """Decode and validate one client frame, or raise FrameError."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError("invalid_json", "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("invalid_frame", "frame must be a JSON object")
    ref = _ref_of(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise FrameError("invalid_frame", "frame needs a string `type`", ref)
    model = FRAMES.get(kind)
    if model is None:
        raise FrameError("unknown_type", f"unknown frame type {kind[:32]!r}", ref)
    try:
        frame = model.model_validate(obj)
    except ValidationError as exc:
        raise FrameError("validation_error", describe(exc)[0], ref) from None
    if isinstance(frame, SubscribeFrame) and "rank" in frame.topics and frame.user_id is None:
        raise FrameError("validation_error", "user_id: required for the rank topic", ref)
    return frame


def encode(message: dict[str, Any]) -> bytes:
    """The JSON of a text frame (UTF-8). Pushes are encoded once for every subscriber."""
    return orjson.dumps(message)


def error_frame(code: str, detail: str, ref: Ref = None) -> bytes:
    return encode({"type": "error", "ref": ref, "code": code, "detail": detail})


class Refused(Exception):
    """A request the service refuses: an HTTP problem (status, code) or a WebSocket error frame."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
