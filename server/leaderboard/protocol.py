"""Wire protocol: request bodies, replies, WebSocket frames and their validation. No I/O.

Client -> server frames (JSON objects with a `type`; an optional `ref` is echoed in the reply):
    auth        {token}                                   -> auth {ok, role, user_id}
    submit      {user_id, score, board?, session_id?, display_name?}   -> ack {accepted, duplicate, board,
                                                                             user_id, score, rank, session_id}
    submit      {items: [submission, ...]}                             -> ack {results: [{index, ...ack} |
                                                                             {index, error: {code, detail}}]}
    subscribe   {board?, topics: ["top"|"rank"], limit?, user_id?, user_ids?}  -> subscribed, then top/rank pushes
                {topics: ["status"]}                                  -> subscribed, then a status push
    unsubscribe {board?, topics, user_id?}                             -> unsubscribed
    ping        {}                                                     -> pong
Server -> client pushes:
    top    {board, seq, total, entries: [{rank, user_id, display_name, score}]}   latest wins, debounced
    rank   {board, user_id, rank, previous_rank, score, seq}                       debounced
    status {state: ok|degraded, checks: {postgres, redis}, detail}                 on subscribe and on change
    error  {ref, code, detail}                                                     the socket stays open
Close codes (errors.py): 1000 normal, 1008 auth failed / submit without rights / key revoked, 1009 frame too
big, 1011 server error, 1012 server restarting (drain), 1013 socket fell behind (did not read its pushes).
See docs/protocol.md for the full contract.
"""

from __future__ import annotations

import decimal
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from . import seasons
from .errors import Invalid
from .ranking import MAX_VALUE, Member, Players, Sort, TopSlice, value_of

USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,64}$"
BOARD_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
USER_ID_RULE = "1-64 characters of A-Z a-z 0-9 _ . : @ -"
USER_IDS_MAX = 100  # players in one friends read (user_ids=) or one rank subscribe frame
BOARD_ID_RULE = "1-64 characters of a-z 0-9 _ -, starting with a letter or digit"

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
BoardId = Annotated[str, StringConstraints(pattern=BOARD_ID_PATTERN)]
# Free text shown to other players (display names, titles): not blank once stripped (as pydantic strips:
# Unicode White_Space); no control characters (Postgres text cannot even hold NUL); no bidirectional controls,
# which can make "\u202eevil Admin" render as "nimdA live". Zero-width joiners stay (emoji need them). Written
# as a pattern so the OpenAPI schema says the same.
_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_BANNED = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
TEXT_PATTERN = rf"^[^{_BANNED}]*[^{_BANNED}{_SPACE}][^{_BANNED}]*$"
TEXT_RULE = "must not be blank, nor contain control characters or bidirectional controls (U+202A-U+202E, U+2066-U+2069)"
DisplayName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True, pattern=TEXT_PATTERN)
]
Title = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True, pattern=TEXT_PATTERN)]


def _integral(value: Any) -> Any:
    """JSON has one number type, and JSON Schema's "integer" includes 120.0: take it as 120."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The validator after Field: before it, pydantic would write the bounds as "ge"/"le", not JSON Schema's
# minimum/maximum, into the OpenAPI document.
Score = Annotated[StrictInt, Field(ge=-MAX_VALUE, le=MAX_VALUE), BeforeValidator(_integral)]
Ref = str | int | None
Format = Literal["number", "time_ms", "time_s"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


METADATA_MAX = 1024  # bytes of a submission's metadata, encoded as compact JSON with every digit of its numbers
METADATA_DEPTH = 16  # levels of objects and arrays, the metadata object itself included


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    digits = _digits_beyond(value, METADATA_DEPTH)
    text = orjson.dumps(value)
    if len(text) + digits > METADATA_MAX:
        how = " (numbers count every digit they are stored with: 1e308 is 309)" if digits else ""
        raise ValueError(f"at most {METADATA_MAX} bytes encoded as JSON, got {len(text) + digits}{how}")
    if b"\\u0000" in text:  # (a JSON string may spell NUL; Postgres jsonb cannot hold it)
        raise ValueError("must not contain the character U+0000")
    return value


def _digits_beyond(value: Any, depth: int) -> int:
    """How many more bytes the numbers of `value` take as Postgres stores them (jsonb keeps a number as a
    numeric and writes every digit: 1e308 comes back as 309 characters) than as sent. Refuses nesting deeper
    than `depth` levels (orjson cannot even encode 255)."""
    if isinstance(value, dict | list):
        if depth == 0:
            raise ValueError(f"at most {METADATA_DEPTH} levels of nested objects and arrays")
        items = value.values() if isinstance(value, dict) else value
        return sum(_digits_beyond(v, depth - 1) for v in items if isinstance(v, dict | list | float))
    if isinstance(value, float) and "e" in (shown := repr(value)):
        return len(format(decimal.Decimal(shown), "f")) - len(orjson.dumps(value))
    return 0


Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_metadata),
    Field(description=f"any JSON object, at most {METADATA_MAX} bytes encoded: shown with the entry"),
]


class Submission(Strict):
    """POST /api/leaderboard/submit body (and the fields of a `submit` frame)."""

    user_id: UserId
    score: Score
    board: BoardId = "global"
    session_id: uuid.UUID | None = None
    display_name: DisplayName | None = None
    metadata: Metadata | None = None

    def metadata_json(self) -> str | None:
        return None if self.metadata is None else orjson.dumps(self.metadata).decode()


def _reset(value: str) -> str | None:
    return seasons.check(value)


class BoardCreate(Strict):
    """POST /api/leaderboards body."""

    id: BoardId
    title: Title | None = None
    sort: Literal["desc", "asc"] = "desc"
    operator: Literal["incr", "decr", "best", "set"] = "incr"
    format: Format = "number"
    reset: Annotated[str, Field(pattern=seasons.SHAPE, max_length=128), AfterValidator(_reset)] | None = Field(
        None, description=f"when the board resets: {seasons.RULE}"
    )


# ---- replies (plain dataclasses: orjson encodes them directly; the OpenAPI schema is derived from them) ----


@dataclass(frozen=True, slots=True)
class Ack:
    """The reply to a committed submission (or a duplicate of one)."""

    duplicate: bool
    board: str
    user_id: str
    score: int | None  # None only for a duplicate whose player's entry was since removed (moderation)
    rank: int | None
    session_id: uuid.UUID
    season: int = 1  # the season it counted in (a duplicate: the one its first submission counted in)
    accepted: bool = True


@dataclass(frozen=True, slots=True)
class Entry:
    rank: int
    user_id: str
    display_name: str | None
    score: int


@dataclass(frozen=True, slots=True)
class MetaEntry(Entry):
    """An entry whose value came with metadata (the key is there only then). `metadata` is the stored JSON
    text, sent as it is (orjson.Fragment): never parsed on the read path."""

    metadata: Any = None


def entry(rank: int, m: Member, sort: Sort) -> Entry:
    if m.meta is None:
        return Entry(rank, m.user_id, m.display_name, value_of(m.key, sort))
    return MetaEntry(rank, m.user_id, m.display_name, value_of(m.key, sort), orjson.Fragment(m.meta))


@dataclass(frozen=True, slots=True)
class TopPage:
    board: str
    total: int
    seq: int
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class PlayersPage:
    """GET /api/leaderboard/ranks: some players (friends, a group) in listing order, with their ranks on the
    whole board; players without an entry are left out."""

    board: str
    season: int
    total: int
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class PlayerRank:
    board: str
    user_id: str
    display_name: str | None
    rank: int
    score: int
    total: int
    percentile: float
    around: list[Entry]


@dataclass(frozen=True, slots=True)
class Board:
    id: str
    title: str
    sort: Literal["desc", "asc"]
    operator: Literal["incr", "decr", "best", "set"]
    format: Format
    created_at: str
    reset: str | None  # null (never), daily, weekly, monthly, or a 5-field cron expression in UTC
    season: int  # the live season
    season_started_at: str
    next_reset_at: str | None  # null when the board never resets


@dataclass(frozen=True, slots=True)
class BoardList:
    boards: list[Board]


@dataclass(frozen=True, slots=True)
class SeasonInfo:
    """A season of a board: `ended_at` null for the live one; `winners` its top 3."""

    season: int
    started_at: str
    ended_at: str | None
    total: int
    winners: list[Entry]


@dataclass(frozen=True, slots=True)
class BoardSeasons:
    board: str
    seasons: list[SeasonInfo]  # newest (the live one, on the first page) first
    next: int | None = None  # `before` for the next page of older seasons; null: no older season


@dataclass(frozen=True, slots=True)
class EndedSummary:
    season: int
    started_at: str
    ended_at: str
    total: int


@dataclass(frozen=True, slots=True)
class ResetReply:
    board: str
    ended: EndedSummary
    season: int  # the new live season


# ---- moderation (admin) -----------------------------------------------------------------------------------

Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True, pattern=TEXT_PATTERN)]


class VoidBody(Strict):
    """POST /api/leaderboard/void (and /restore) body."""

    session_id: uuid.UUID
    reason: Reason


class BanBody(Strict):
    """POST /api/players/{user_id}/ban body."""

    reason: Reason


@dataclass(frozen=True, slots=True)
class VoidReply:
    board: str
    user_id: str
    session_id: uuid.UUID
    score: int | None  # the player's value recomputed without it; None: nothing remains, the entry is gone
    season: int


@dataclass(frozen=True, slots=True)
class RemoveReply:
    board: str
    user_id: str
    season: int
    voided: int  # the player's submissions of the live season voided with it


@dataclass(frozen=True, slots=True)
class BanReply:
    user_id: str
    banned: bool
    boards: dict[str, int | None]  # board -> the player's value there now (a ban: None everywhere it had one)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: Literal["void", "restore", "remove", "ban", "unban"]
    board: str | None
    user_id: str
    session_id: uuid.UUID | None
    reason: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next_before: int | None  # pass as `before` for the next (older) page; None: this is the last


@dataclass(frozen=True, slots=True)
class LoggedSubmission:
    session_id: uuid.UUID
    board: str
    season: int
    score: int
    submitted_at: str
    voided_at: str | None
    live: bool  # of the board's live season (moderation can change it); false: of an ended season, final


@dataclass(frozen=True, slots=True)
class PlayerSubmissions:
    user_id: str
    banned: bool
    submissions: list[LoggedSubmission]  # newest first


@dataclass(frozen=True, slots=True)
class BoardDetail(Board):
    """One board with its entry count (GET /api/leaderboards/{id})."""

    total: int = 0


@dataclass(frozen=True, slots=True)
class Problem:
    """RFC 9457 problem details (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


def entries(page: TopSlice, sort: Sort) -> list[Entry]:
    """A slice as wire entries: competition ranks and scores (the one place sort keys become scores)."""
    return [entry(r, m, sort) for r, m in zip(page.ranks(), page.members, strict=True)]


def player_entries(players: Players, sort: Sort) -> list[Entry]:
    """Players as wire entries, shaped as /top's."""
    return [entry(rank, m, sort) for m, rank in players.ranked]


# ---- WebSocket frames -------------------------------------------------------------------------------------

RefField = Annotated[str, StringConstraints(max_length=64)] | StrictInt | None


class Frame(Strict):
    ref: RefField = None


class AuthFrame(Frame):
    type: Literal["auth"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class SubmitFrame(Submission):
    """A `submit` frame is a Submission with a type and a ref: it goes to the writer as it is."""

    type: Literal["submit"]
    ref: RefField = None


ITEMS_MAX = 500  # items in one batch at most (LEADERBOARD_BATCH_ITEMS_MAX may set a lower limit)


class BatchFrame(Frame):
    """`{"type": "submit", "ref": ..., "items": [submission, ...]}`: each item validated and committed on its
    own; one `ack` with `results` in item order answers the frame."""

    type: Literal["submit"]
    items: Annotated[list[Any], Field(min_length=1, max_length=ITEMS_MAX)]


class BatchBody(Strict):
    """POST /api/leaderboard/submit/batch body: each item is a Submission, validated on its own."""

    items: Annotated[list[Any], Field(min_length=1, max_length=ITEMS_MAX)]


@dataclass(frozen=True, slots=True)
class ItemError:
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of a batch: the ack's fields, or `error`; `index` is its place in `items`."""

    index: int
    accepted: bool = False
    duplicate: bool | None = None
    board: str | None = None
    user_id: str | None = None
    score: int | None = None
    rank: int | None = None
    session_id: uuid.UUID | None = None
    season: int | None = None
    error: ItemError | None = None


@dataclass(frozen=True, slots=True)
class BatchAck:
    results: list[ItemResult]


def parse_items(items: list[Any]) -> list[Submission | Invalid]:
    """Each item of a batch as a Submission, or why it is not one."""
    out: list[Submission | Invalid] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(Invalid("item must be a JSON object"))
            continue
        try:
            out.append(Submission.model_validate(item))
        except ValidationError as exc:
            out.append(describe(exc))
    return out


def item_result(index: int, outcome: Ack | Exception) -> ItemResult:
    if isinstance(outcome, Ack):
        a = outcome
        return ItemResult(index, True, a.duplicate, a.board, a.user_id, a.score, a.rank, a.session_id, a.season)
    code, detail = getattr(outcome, "code", "internal_error"), getattr(outcome, "detail", str(outcome))
    return ItemResult(index, error=ItemError(code, detail))


Topic = Literal["top", "rank", "status"]


class SubscribeFrame(Frame):
    type: Literal["subscribe", "unsubscribe"]
    board: BoardId = "global"
    topics: Annotated[list[Topic], Field(min_length=1, max_length=2)]
    limit: Annotated[StrictInt, Field(ge=1, le=100)] = 10
    user_id: UserId | None = None
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=USER_IDS_MAX)] | None = None  # friends

    def players(self) -> list[str]:
        """The players of the rank topic: `user_id` and `user_ids`, each once, in order."""
        return list(dict.fromkeys([*([self.user_id] if self.user_id else []), *(self.user_ids or [])]))


class PingFrame(Frame):
    type: Literal["ping"]


ClientFrame = AuthFrame | SubmitFrame | BatchFrame | SubscribeFrame | PingFrame

FRAMES: dict[str, type[ClientFrame]] = {
    "auth": AuthFrame,
    "submit": SubmitFrame,
    "subscribe": SubscribeFrame,
    "unsubscribe": SubscribeFrame,
    "ping": PingFrame,
}


class FrameError(Invalid):
    """A bad client frame: answered with an `error` frame, the socket stays open."""

    def __init__(self, code: str, detail: str, ref: Ref = None) -> None:
        super().__init__(detail)
        self.code, self.ref = code, ref


def _ref_of(obj: dict[str, Any]) -> Ref:
    ref = obj.get("ref")
    if isinstance(ref, bool) or not isinstance(ref, str | int) or (isinstance(ref, str) and len(ref) > 64):
        return None
    return ref


# What a field must be, in words, where pydantic would show a regex or a union's internals.
RULES = {
    "user_id": "must be " + USER_ID_RULE, "board": "must be " + BOARD_ID_RULE, "id": "must be " + BOARD_ID_RULE,
    "ref": "must be a string of at most 64 characters, or an integer", "session_id": "must be a UUID",
    "score": f"must be an integer within ±{MAX_VALUE}", "display_name": TEXT_RULE, "title": TEXT_RULE,
    "reason": TEXT_RULE,
    "reset": "must be " + seasons.RULE,
}  # fmt: skip
_PLAIN = {"extra_forbidden": "unknown field", "missing": "required"}
_RULED = {"string_pattern_mismatch", "int_type", "int_from_float", "int_parsing", "uuid_parsing", "uuid_type"}


def describe(exc: ValidationError) -> Invalid:
    """A pydantic error as an Invalid: one readable line plus the structured list, said in words."""
    errors: list[dict[str, Any]] = []
    for e in exc.errors(include_url=False):
        loc = [p for p in e["loc"] if isinstance(p, int) or ("-" not in p and p not in ("int", "str"))]
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        if e["type"] in _PLAIN:
            msg = _PLAIN[e["type"]]
        elif e["type"] == "value_error":
            msg = str(e["ctx"]["error"])
        elif field in RULES and (field == "ref" or e["type"] in _RULED):
            msg = RULES[field]
        else:
            msg = e["msg"]
        if not errors or errors[-1] != {"loc": loc, "msg": msg}:  # a union reports each member: say it once
            errors.append({"loc": loc, "msg": msg})
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors)
    return Invalid(detail, errors)


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
    model = BatchFrame if kind == "submit" and "items" in obj else FRAMES.get(kind)
    if model is None:
        raise FrameError("unknown_type", f"unknown frame type {kind[:32]!r}", ref)
    try:
        frame = model.model_validate(obj)
    except ValidationError as exc:
        raise FrameError("validation_error", describe(exc).detail, ref) from None
    if isinstance(frame, SubscribeFrame) and "rank" in frame.topics and frame.user_id is None and not frame.user_ids:
        raise FrameError("validation_error", "user_id (or user_ids): required for the rank topic", ref)
    return frame


def encode(message: Any) -> bytes:
    """The JSON of a text frame or a body (UTF-8): dicts, dataclasses, UUIDs. Pushes are encoded once."""
    return orjson.dumps(message)


def reply(kind: str, ref: Ref, body: Any) -> bytes:
    """A reply frame `{"type": kind, "ref": ref, ...the fields of body}`; body is a dict or a dataclass
    (encoded once, then spliced after the two leading fields)."""
    fields = orjson.dumps(body)
    head = b'{"type":"%s","ref":%s' % (kind.encode(), orjson.dumps(ref))
    return head + (b"}" if fields == b"{}" else b"," + fields[1:])


def error_frame(code: str, detail: str, ref: Ref = None, retry_after: float | None = None) -> bytes:
    """An `error` frame; `retry_after` (seconds) only on a `rate_limited` refusal that knows its wait."""
    frame: dict[str, Any] = {"type": "error", "ref": ref, "code": code, "detail": detail}
    if retry_after is not None:
        frame["retry_after"] = round(retry_after, 3)
    return encode(frame)
