"""Logging setup: JSON or human lines, context fields (request/connection ids), secret redaction.

``configure_logging(level, fmt)`` installs one handler on the root logger. ``bind(**fields)`` /
``bound(**fields)`` attach fields (``request_id``, ``conn_id``, ``board``...) to every record logged in the
current context (contextvars, so each asyncio task keeps its own). ``extra={...}`` fields are printed too.

Secrets never reach the output: bearer credentials, ``lbk_`` API keys, JWTs (``eyJ...``), passwords in
URLs and any value passed to ``register_secret()`` are replaced by ``[REDACTED]`` in the message, its
arguments, extra fields and tracebacks. Redaction happens when the record is created (a log record
factory), so every handler, including the New Relic agent's log forwarding, only sees redacted text;
a handler filter re-checks extra fields, which the logging module attaches after the factory runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import re
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import IO, Any

REDACTED = "[REDACTED]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer <anything token-like>
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    # JWT-shaped strings: header "eyJ..." optionally followed by .payload.signature
    (re.compile(r"eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,2}"), REDACTED),
    # Our API keys
    (re.compile(r"lbk_[A-Za-z0-9_\-]+"), REDACTED),
    # scheme://user:password@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/\s@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
]
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None

_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("log_fields", default=_NO_FIELDS)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_HANDLER_MARK = "_leaderboard_handler"
_REDACTED_MARK = "_leaderboard_redacted"


# --- redaction -------------------------------------------------------------------------------------------


def register_secret(value: str | None) -> None:
    """Redact this exact value wherever it appears (e.g. the player-token secret, a license key)."""
    global _secret_re
    if not value or len(value) < 4:  # too short to redact without mangling ordinary text
        return
    _secrets.add(value)
    alternatives = sorted(_secrets, key=len, reverse=True)
    _secret_re = re.compile("|".join(re.escape(s) for s in alternatives))


def redact(text: str) -> str:
    """`text` with every credential-looking substring replaced by [REDACTED]."""
    if _secret_re is not None:
        text = _secret_re.sub(REDACTED, text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    return value


def _redact_arg(arg: Any) -> Any:
    if arg is None or isinstance(arg, bool | int | float):
        return arg
    if isinstance(arg, str):
        return redact(arg)
    # Keep the object (and so %r/%d formatting) unless its text would show a secret.
    text, rtext = str(arg), repr(arg)
    if redact(text) != text or redact(rtext) != rtext:
        return redact(text)
    return arg


def _redact_record(record: logging.LogRecord) -> None:
    """Redact message template, arguments and traceback of a record in place (idempotent).

    The argument structure is kept so that formatters that unpack ``record.args`` (uvicorn's access log
    formatter) still work.
    """
    if getattr(record, _REDACTED_MARK, False):
        return
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    elif record.msg is not None and not isinstance(record.msg, int | float):
        text = str(record.msg)
        if redact(text) != text:
            record.msg = redact(text)
    if isinstance(record.args, Mapping):
        record.args = {k: _redact_arg(v) for k, v in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(a) for a in record.args)
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    setattr(record, _REDACTED_MARK, True)


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    _redact_record(record)
    return record


class RedactingFilter(logging.Filter):
    """Handler filter: redact records made by other factories, and the `extra=` fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRS and not key.startswith("_leaderboard"):
                record.__dict__[key] = _redact_value(value)
        return True


# --- context fields ----------------------------------------------------------------------------------------


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add fields to every record logged from the current context; undo with `unbind(token)`."""
    return _fields.set(MappingProxyType({**_fields.get(), **fields}))


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    """Restore the fields that were bound before `bind()` returned `token`."""
    _fields.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """`with bound(conn_id=...):` — fields for the duration of the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        _fields.reset(token)


def current_fields() -> Mapping[str, Any]:
    """The fields bound in the current context."""
    return _fields.get()


def new_id() -> str:
    """A short random id for a request or a connection."""
    return uuid.uuid4().hex[:16]


def request_id() -> str | None:
    """The request id bound in the current context, if any."""
    value = _fields.get().get("request_id")
    return value if isinstance(value, str) else None


_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIdMiddleware:
    """Pure ASGI middleware: bind `request_id` (from a well-formed X-Request-ID header, else a new one)
    for HTTP requests and echo it in the X-Request-ID response header; WebSockets get a `conn_id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            with bound(conn_id=new_id()):
                await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID_RE.match(candidate):
                    rid = candidate
                break
        rid = rid or new_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        with bound(request_id=rid):
            await self.app(scope, receive, send_with_id)


# --- formatters --------------------------------------------------------------------------------------------


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string in a log call must not lose the line (or break the JSON)
        return redact(f"{record.msg!s} {record.args!r}")


# `extra=` attributes that are not information: uvicorn's `color_message` repeats `msg` with ANSI escapes.
_DROPPED_EXTRAS = frozenset({"color_message"})


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(_fields.get())
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRS and key not in _DROPPED_EXTRAS and not key.startswith("_leaderboard"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context and extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        _redact_record(record)
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
        }
        for key, value in _extras(record).items():
            if key not in out:
                out[key] = _redact_value(value)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=lambda o: redact(str(o)), ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """`09:57:06.349 INFO  leaderboard.ws  message  key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        _redact_record(record)
        ts = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        line = f"{ts} {record.levelname:<5} {record.name}  {_message(record)}"
        extras = _extras(record)
        if extras:
            line += "  " + " ".join(f"{k}={redact(str(v))}" for k, v in extras.items())
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: IO[str] | None = None) -> None:
    """Install the root handler (replacing ours from a previous call); fmt is json, human or auto.

    `auto` means human when the stream is a terminal, JSON otherwise. Uvicorn's own loggers are made to
    propagate here (start uvicorn with ``log_config=None`` so it does not install its handlers again).
    """
    fmt = fmt.lower()
    if fmt not in ("json", "human", "auto"):
        raise ValueError(f"log format must be json, human or auto, not {fmt!r}")
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        fmt = "human" if isatty is not None and isatty() else "json"

    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)

    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())

    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
