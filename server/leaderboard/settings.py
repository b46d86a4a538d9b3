"""Settings: one object, read from the environment (prefix LEADERBOARD_) and passed to create_app()."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. Documented in README.md (keep the table in step)."""

    model_config = SettingsConfigDict(env_prefix="LEADERBOARD_", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".leaderboard")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    push_interval_ms: int = Field(default=100, ge=1, le=60_000)
    max_frame_bytes: int = Field(default=65_536, ge=1024)
    slow_socket_timeout_s: float = Field(default=5.0, gt=0)
    max_subscriptions: int = Field(default=64, ge=1)
    drain_timeout_s: float = Field(default=10.0, gt=0)

    public_read: bool = True
    player_token_secret: str | None = Field(default=None, min_length=32)  # HS256 needs >= 256 bits of key

    batch_max: int = Field(default=500, ge=1)
    write_concurrency: int = Field(default=4, ge=1, le=32)
    db_pool_size: int = Field(default=10, ge=2)
    rebuild_batch: int = Field(default=10_000, ge=100)

    cors_origins: str = ""  # comma-separated origins allowed to call the REST API from a browser ("*" = any)
    static_dir: Path | None = None
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "human"] = "auto"

    @property
    def push_interval(self) -> float:
        return self.push_interval_ms / 1000.0

    # Limits on what clients can make one process hold (guard.py; docs/operations.md, "Limits")
    max_header_bytes: int = Field(default=32_768, ge=8_192, le=1_048_576)  # a request head in all; a line: 8 KiB
    request_read_timeout_s: float = Field(default=5.0, gt=0, le=300)  # a complete request (head and body)
    keepalive_timeout_s: float = Field(default=5.0, gt=0, le=3600)  # an idle keep-alive connection
    max_connections: int = Field(default=10_000, ge=1)  # per process, HTTP and WebSocket
