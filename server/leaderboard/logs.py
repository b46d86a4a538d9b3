"""Logging: JSON or human lines, context fields (request/connection ids), secrets redacted in one place.

`configure_logging(level, fmt)` installs one handler on the root logger. `bound(**fields)` attaches fields
(`request_id`, `conn_id`, ...) to every record logged in the current context (a contextvar, so each asyncio
task keeps its own); `extra={...}` fields are printed too.

Secrets never reach any output: bearer credentials, `lbk_` API keys, JWTs, passwords in URLs and any value
given to `register_secret()` become [REDACTED]. `_redact_record` runs once per record, in the record factory,
so every handler (New Relic's log forwarding included) sees redacted text; `extra=` fields, which logging
attaches after the factory, are redacted by our formatters when they print them.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import random
import re
import sys
import traceback
from collections.abc import Mapping
from types import MappingProxyType
from typing import IO, Any

REDACTED = "[REDACTED]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),  # Authorization: Bearer ...
    (re.compile(r"eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,2}"), REDACTED),  # JWTs
    (re.compile(r"lbk_[A-Za-z0-9_\-]+"), REDACTED),  # our API keys
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/\s@]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),  # user:pass@
]
_secrets: set[str] = set()
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})
_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("log_fields", default=_NO_FIELDS)
# Attributes every LogRecord has; anything else came from `extra=` (uvicorn's ANSI `color_message` we drop).
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}
_HANDLER_MARK = "_leaderboard_handler"


def register_secret(value: str | None) -> None:
    """Redact this exact value wherever it appears (e.g. the player-token secret)."""
    global _PATTERNS
    if value and len(value) >= 4 and value not in _secrets:  # shorter would mangle ordinary text
        _secrets.add(value)
        _PATTERNS = [(re.compile(re.escape(value)), REDACTED), *_PATTERNS]


def redact(text: str) -> str:
    """`text` with every credential-looking substring replaced by [REDACTED]."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)  # keep the object (and so %r / %d formatting) unless its text would show a secret
    return redact(text) if redact(text) != text or redact(repr(value)) != repr(value) else value


def _redact_record(record: logging.LogRecord) -> None:
    """Redact message, arguments and traceback in place; keep the argument structure (uvicorn's access
    formatter unpacks record.args)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, Mapping):
        record.args = {k: _redact_value(v) for k, v in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_redact_value(a) for a in record.args)
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    _redact_record(record)
    return record


# ---- context fields --------------------------------------------------------------------------------------


class bound:
    """`with bound(conn_id=...):` fields on every record logged in this context for the block. (A class, not
    a generator-based context manager: it is entered once per HTTP request.)"""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        self._token: contextvars.Token[Mapping[str, Any]] | None = None

    def __enter__(self) -> None:
        outer = _fields.get()
        self._token = _fields.set(MappingProxyType({**outer, **self._fields} if outer else self._fields))

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _fields.reset(self._token)


def new_id() -> str:
    """16 hex digits from the process's PRNG (reseeded after a fork): no getrandom syscall per request."""
    return f"{random.getrandbits(64):016x}"


def request_id() -> str | None:
    value = _fields.get().get("request_id")
    return value if isinstance(value, str) else None


# ---- formatters ------------------------------------------------------------------------------------------


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string in a log call must not lose the line (or break the JSON)
        return redact(f"{record.msg!s} {record.args!r}")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(_fields.get())
    fields.update((k, v) for k, v in record.__dict__.items() if k not in _RECORD_ATTRS)
    return {k: _redact_value(v) for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context and extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=lambda o: redact(str(o)), ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """`09:57:06.349 INFO  leaderboard.ws  message  key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        line = f"{ts} {record.levelname:<5} {record.name}  {_message(record)}"
        extras = _extras(record)
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        for tail in (record.exc_text, record.stack_info):
            if tail:
                line += "\n" + tail
        return line


def configure_logging(
    level: str = "INFO", fmt: str = "auto", stream: IO[str] | None = None, access_log: bool = True
) -> None:
    """Install the root handler (replacing ours from a previous call); fmt is json, human or auto (human on a
    terminal). Uvicorn's loggers propagate here (start uvicorn with log_config=None); its access log only with
    `access_log` (uvicorn formats an access line only when that logger has somewhere to go)."""
    fmt = fmt.lower()
    if fmt not in ("json", "human", "auto"):
        raise ValueError(f"log format must be json, human or auto, not {fmt!r}")
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "human" if getattr(stream, "isatty", lambda: False)() else "json"
    logging.setLogRecordFactory(_redacting_factory)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
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
        lg.propagate = access_log or name != "uvicorn.access"
