"""What the session fixtures hand to tests: the services, a running server's URL, API keys, the token secret."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SECRET = "s3cret-for-tests-only-0123456789abcdef"  # >= 32 bytes: PyJWT warns on shorter HS256 keys


class ServerURL(str):
    """The base URL of a running server; `.stop()` shuts it down, `.settings` is what it runs with."""

    settings: Any
    stop: Callable[[], Awaitable[None]]


@dataclass
class Services:
    dsn: str  # the test database, migrated
    redis_url: str
    admin_dsn: str  # a database on the same server, for CREATE/DROP DATABASE
    embedded: bool


@dataclass
class ApiKeys:
    """One API key of each role (the `keys` fixture)."""

    admin: str
    submit: str
    read: str


def dsn_with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))
