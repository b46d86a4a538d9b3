"""What the session fixtures hand to tests: the services, a running server's URL, API keys, the token secret."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SECRET = "s3cret-for-tests-only-0123456789abcdef"  # >= 32 bytes: PyJWT warns on shorter HS256 keys


class ServerURL(str):
    """The base URL of a running server; `.stop()` shuts it down, `.settings` is what it runs with, `.app` is
    the Starlette app uvicorn serves."""

    settings: Any
    app: Any
    stop: Callable[[], Awaitable[None]]

    def __deepcopy__(self, memo: dict[int, Any]) -> ServerURL:
        return self  # a handle on one running server: a copy is the same server (and the app is not copyable)


def runtime_of(url: ServerURL) -> Any:
    """The app.Runtime a running in-process server's lifespan started (its store, hub, open sockets...).

    create_app keeps it in a closure only: the /ws endpoint holds `context` (create_app's `runtime()`), which
    holds the `started` list. If create_app changes shape, this is the one place to follow it.
    """
    from starlette.routing import WebSocketRoute

    route = next(r for r in url.app.router.routes if isinstance(r, WebSocketRoute) and r.path == "/ws")
    context = inspect.getclosurevars(route.endpoint).nonlocals["context"]
    started = inspect.getclosurevars(context).nonlocals["started"]
    assert started, "the server's lifespan has not started"
    return started[0]


@dataclass
class Services:
    dsn: str  # the test database, migrated
    redis_url: str
    admin_dsn: str  # a database on the same server, for CREATE/DROP DATABASE
    embedded: bool
    cluster: bool = False  # redis_url is a node of a Redis Cluster


@dataclass
class ApiKeys:
    """One API key of each role (the `keys` fixture)."""

    admin: str
    submit: str
    read: str


def dsn_with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))
