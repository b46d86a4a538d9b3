"""Who is calling: API keys (admin / submit / read, stored as SHA-256 hashes) and player JWTs (HS256)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import asyncpg
import jwt

from .protocol import Refused

ROLES = ("admin", "submit", "read")
KEY_PREFIX = "lbk_"
_CACHE_TTL = 30.0  # seconds a verified (or unknown) key is remembered; a revocation takes effect within it


@dataclass(frozen=True, slots=True)
class Principal:
    role: str  # admin | submit | read | player | anonymous
    user_id: str | None = None
    name: str | None = None

    def can_read(self, public_read: bool) -> bool:
        return public_read or self.role != "anonymous"

    def can_submit_for(self, user_id: str) -> bool:
        return self.role in ("admin", "submit") or (self.role == "player" and self.user_id == user_id)

    @property
    def can_submit(self) -> bool:
        return self.role in ("admin", "submit", "player")


ANONYMOUS = Principal("anonymous")


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_api_key(db: asyncpg.Pool | asyncpg.Connection, role: str, name: str) -> str:
    """Create a key and return it; only its hash is stored, so this is the one time it is seen."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await db.execute("INSERT INTO api_keys (name, role, key_hash) VALUES ($1, $2, $3)", name, role, _hash(key))
    return key


async def list_api_keys(db: asyncpg.Pool | asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY id")


async def revoke_api_key(db: asyncpg.Pool | asyncpg.Connection, key_id: int) -> bool:
    status = await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id)
    return bool(status.endswith(" 1"))


class Authenticator:
    """Turns a bearer credential into a Principal, or raises Refused(401)."""

    def __init__(self, pool: asyncpg.Pool, player_token_secret: str | None) -> None:
        self.pool = pool
        self.secret = player_token_secret
        self._keys: dict[bytes, tuple[float, Principal | None]] = {}

    async def principal(self, credential: str | None) -> Principal:
        if credential is None:
            return ANONYMOUS
        if credential.startswith(KEY_PREFIX):
            return await self._api_key(credential)
        return self._player(credential)

    async def from_header(self, header: str | None) -> Principal:
        if header is None:
            return ANONYMOUS
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Refused(401, "unauthorized", "use 'Authorization: Bearer <api key or player token>'")
        return await self.principal(credential.strip())

    async def _api_key(self, key: str) -> Principal:
        h = _hash(key)
        now = time.monotonic()
        hit = self._keys.get(h)
        if hit is None or hit[0] < now:
            row = await self.pool.fetchrow(
                "SELECT role, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", h
            )
            found = None if row is None else Principal(row["role"], name=row["name"])
            if len(self._keys) > 10_000:
                self._keys.clear()
            hit = self._keys[h] = (now + _CACHE_TTL, found)
        if hit[1] is None:
            raise Refused(401, "unauthorized", "unknown or revoked API key")
        return hit[1]

    def _player(self, token: str) -> Principal:
        if not self.secret:
            raise Refused(401, "unauthorized", "player tokens are not enabled on this server")
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Refused(401, "unauthorized", "player token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Refused(401, "unauthorized", f"invalid player token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Refused(401, "unauthorized", "invalid player token: bad sub")
        return Principal("player", user_id=sub)
