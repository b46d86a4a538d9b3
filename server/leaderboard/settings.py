"""Settings: one object, read from the environment (prefix LEADERBOARD_) and passed to create_app().

`load_settings()` is the way in for programs: it turns every validation problem into one line of words
naming the variable (`LEADERBOARD_PORT: must be an integer 0-65535, got 'abc'`) and raises `ConfigError`.
`unknown_variables()` finds LEADERBOARD_* variables that are not settings (typos). Neither prints nor exits:
the CLI does that.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import parse_qs, urlsplit

import annotated_types
from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "LEADERBOARD_"
PLACEHOLDER = "CHANGE_ME"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_SECRET_CHARS = 32  # HS256 needs a key of at least 256 bits
SECRET_FIELDS = frozenset({"player_token_secret"})
# LEADERBOARD_* variables that are not settings of the service: Compose interpolation, the UI tooling, tests.
NOT_SETTINGS = frozenset({"LEADERBOARD_HTTP_PORT", "LEADERBOARD_BIN", "LEADERBOARD_URL"})
NOT_SETTINGS_PREFIXES = ("LEADERBOARD_TEST_",)

_GENERATE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


class Settings(BaseSettings):
    """Every knob of the service. Documented in README.md (keep the table in step)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".leaderboard")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    push_interval_ms: int = Field(default=100, ge=1, le=60_000)
    max_frame_bytes: int = Field(default=65_536, ge=1024)
    slow_socket_timeout_s: float = Field(default=5.0, gt=0)
    max_subscriptions: int = Field(default=64, ge=1)  # boards whose top one socket follows
    max_followed: int = Field(default=200, ge=1, le=100_000)  # players one socket follows (rank topic)
    drain_timeout_s: float = Field(default=10.0, gt=0)

    public_read: bool = True
    player_token_secret: str | None = None  # HS256 needs >= 256 bits of key: checked below

    batch_max: int = Field(default=500, ge=1)
    batch_items_max: int = Field(default=500, ge=1, le=500)  # items in one batch frame or request
    write_concurrency: int = Field(default=4, ge=1, le=32)
    db_pool_size: int = Field(default=10, ge=2)
    rebuild_batch: int = Field(default=10_000, ge=100)

    cors_origins: str = ""  # comma-separated origins allowed to call the REST API from a browser ("*" = any)
    static_dir: Path | None = None
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "human"] = "auto"
    access_log: bool = False  # one INFO line per HTTP request: off by default (it costs more than a submit)

    # integrity and auth hardening (issue #9)
    verify_interval_s: float = Field(default=30.0, gt=0)  # each board checked against Postgres this often
    ws_frame_rate: float = Field(default=50.0, gt=0)  # frames/s a socket without an API key may send (burst 2x)
    player_token_max_lifetime_s: float = Field(default=86_400.0, gt=0)  # longest exp - iat a token may have
    player_token_audience: str | None = None  # when set, player tokens need this `aud`
    player_token_issuer: str | None = None  # when set, player tokens need this `iss`

    # Limits on what clients can make one process hold (guard.py; docs/operations.md, "Limits")
    max_header_bytes: int = Field(default=32_768, ge=8_192, le=1_048_576)  # a request head in all; a line: 8 KiB
    request_read_timeout_s: float = Field(default=5.0, gt=0, le=300)  # a complete request (head and body)
    keepalive_timeout_s: float = Field(default=5.0, gt=0, le=3600)  # an idle keep-alive connection
    max_connections: int = Field(default=10_000, ge=1)  # per process, HTTP and WebSocket

    # Redis Cluster (issue #14; docs/operations.md, "Redis Cluster")
    redis_cluster: bool | None = None  # unset: ask the node at LEADERBOARD_REDIS_URL (INFO cluster)
    unsubscribe_grace_s: float = Field(default=5.0, ge=0, le=3600)  # a board's channel kept after its last follower

    # The submission log (issue #14; docs/operations.md, "The submission log")
    idempotency_window_days: int = Field(default=30, ge=1, le=366)  # a retry within this is a duplicate
    log_retention_months: int | None = Field(default=None, ge=1, le=1200)  # `leaderboard maintain`; unset: keep all
    # Abuse limits (issue #13; limits.py, docs/operations.md, "Abuse limits")
    player_submit_rate: float = Field(default=0.0, ge=0, le=1_000_000)  # per (board, user_id) per s; 0 = off
    auth_failures_max: int = Field(default=10, ge=0, le=1_000_000)  # per client address per window; 0 = off
    auth_failure_window_s: float = Field(default=60.0, gt=0, le=86_400)
    ws_idle_timeout_s: float = Field(default=30.0, gt=0, le=86_400)  # a socket without auth or subscribe

    @property
    def push_interval(self) -> float:
        return self.push_interval_ms / 1000.0

    @field_validator("*", mode="before")
    @classmethod
    def _no_placeholder(cls, value: Any) -> Any:
        if isinstance(value, str) and PLACEHOLDER in value:
            raise ValueError(f"still holds the {PLACEHOLDER} placeholder from the example file: set a real value")
        return value

    @field_validator("player_token_secret")
    @classmethod
    def _long_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_SECRET_CHARS:
            raise ValueError(
                f"must be at least {MIN_SECRET_CHARS} characters (HS256 needs a 256-bit key), got {len(value)}; "
                f"generate one with {_GENERATE_SECRET}"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value:
            problem = _url_problem(value, ("postgresql", "postgres"), has_db_number=False)
            if problem:
                raise ValueError(
                    f"must be a PostgreSQL URL like postgresql://user:password@host:5432/dbname ({problem}), "
                    f"got {redact_url(value)!r}"
                )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value:
            problem = _url_problem(value, ("redis", "rediss", "unix"), has_db_number=True)
            if problem:
                raise ValueError(f"must be a Redis URL like redis://host:6379/0 ({problem}), got {redact_url(value)!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        level = "WARNING" if level == "WARN" else level
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return level

    @field_validator("log_retention_months", mode="before")
    @classmethod
    def _all_when_blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("redis_cluster", mode="before")
    @classmethod
    def _detect_when_blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "auto") else value


@dataclass(frozen=True)
class Problem:
    """One invalid setting: which field, and what is wrong with it in words (without the variable name)."""

    field: str
    text: str

    @property
    def variable(self) -> str:
        return PREFIX + self.field.upper() if self.field else "settings"


class ConfigError(Exception):
    """Invalid configuration. str() is one line per problem: `LEADERBOARD_X: what is wrong, how to fix it`."""

    def __init__(self, problems: list[Problem], names: Mapping[str, str] | None = None) -> None:
        self.problems = problems
        self.names = dict(names or {})
        super().__init__("\n".join(f"{self.name_of(p)}: {p.text}" for p in problems))

    def name_of(self, problem: Problem) -> str:
        return self.names.get(problem.field, problem.variable)

    def naming(self, names: Mapping[str, str]) -> ConfigError:
        """The same problems, naming some fields differently (a command-line option instead of the variable)."""
        return ConfigError(self.problems, {**self.names, **names})


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and keyword overrides); raises ConfigError with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(problems(exc)) from None


def problems(exc: ValidationError) -> list[Problem]:
    """A pydantic ValidationError of Settings in words: one Problem per field, in field order."""
    found: dict[str, Problem] = {}
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        if name in Settings.model_fields and name not in found:
            found[name] = Problem(name, _describe(name, err))
    if not found:  # not tied to one field (nothing of ours raises such an error): keep pydantic's words
        return [Problem("", "; ".join(e["msg"] for e in exc.errors(include_url=False)))]
    order = list(Settings.model_fields)
    return sorted(found.values(), key=lambda p: order.index(p.field))


def _describe(name: str, err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    if err["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])  # our own validators already speak in words (and never echo a secret)
    text = f"must be {_expected(name)}"
    if name not in SECRET_FIELDS:
        text += f", got {err['input']!r}"
    return text


def _expected(name: str) -> str:
    """What a field accepts, from its type and constraints: 'an integer 0-65535', 'a number > 0', ..."""
    info = Settings.model_fields[name]
    annotation = info.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(annotation))
    if annotation in (bool, bool | None):
        return "true or false"
    if annotation in (int | None, float | None):  # optional numbers: unset means none (the README says what)
        annotation = int if annotation == int | None else float
    if annotation not in (int, float):
        return "a path" if annotation in (Path, Path | None) else "text"
    noun = "an integer" if annotation is int else "a number"
    low: object = None
    high: object = None
    strict = False
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            low = m.ge
        elif isinstance(m, annotated_types.Gt):
            low, strict = m.gt, True
        elif isinstance(m, annotated_types.Le):
            high = m.le
    if low is not None and high is not None and not strict:
        return f"{noun} {low}-{high}"
    words = [noun]
    if low is not None:
        words.append(f"{'>' if strict else '>='} {low}")
    if high is not None:
        words.append(f"{'and ' if low is not None else ''}<= {high}")
    return " ".join(words)


def _url_problem(url: str, schemes: tuple[str, ...], *, has_db_number: bool) -> str | None:
    """Why `url` is not a usable URL of one of `schemes` (None if it looks fine)."""
    if "://" not in url:
        return "not a URL"
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        return f"{parts.scheme}:// is not {' or '.join(s + '://' for s in schemes)}"
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return "the port is not a number 0-65535"
    if parts.scheme.lower() == "unix":
        return None if parts.path else "a unix:// URL needs the socket path"
    if not parts.hostname and not parse_qs(parts.query).get("host"):
        if has_db_number or parts.netloc:  # postgresql:///db (libpq defaults) is allowed
            return "no host"
    if has_db_number and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return "the database after the / must be a number"
    return None


# user:password@ in anything URL-like, even without a proper scheme:// (the password is the part to hide).
_CREDENTIALS = re.compile(r"(?<![^/\s])([^/:@\s]*):(?!//)\S*@")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages."""
    return _CREDENTIALS.sub(r"\1:***@", url)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per LEADERBOARD_* variable that is not a setting (ignored by the service), with a guess."""
    env = os.environ if environ is None else environ
    fields = sorted(f.upper() for f in Settings.model_fields)
    known = {PREFIX + f for f in fields}
    warnings = []
    for key in sorted(env):
        name = key.upper()
        if not name.startswith(PREFIX) or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith(NOT_SETTINGS_PREFIXES):
            continue
        guess = difflib.get_close_matches(name.removeprefix(PREFIX), fields, n=1, cutoff=0.75)
        hint = f"; did you mean {PREFIX}{guess[0]}?" if guess else "; README.md lists the settings"
        warnings.append(f"warning: {key} is not a setting and is ignored{hint}")
    return warnings
