"""Who is calling: API keys (admin / submit / read, stored as SHA-256 hashes) and player JWTs (HS256).

Every process keeps the active keys in memory and reloads them every few seconds, so a request costs no
Postgres round trip, a key verified before a Postgres outage keeps working during it, and a revoked key is
noticed within seconds (open sockets authenticated with it are then closed, see ws.py). A key not in memory
(created a moment ago) is looked up once; such look-ups are rationed, so guessing keys costs us nothing; and a
client address whose credentials failed too often lately is refused for a while (limits.AuthFailures).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import jwt

from .errors import Unauthorized, Unavailable
from .limits import AuthFailures

log = logging.getLogger(__name__)

ROLES = ("admin", "submit", "read")
KEY_PREFIX = "lbk_"
DB_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
UNKNOWN_KEY = "unknown or revoked API key"
LOOKUPS_PER_SECOND = 20  # look-ups of keys not in memory, per process (a burst of as many is allowed)

SQL_ACTIVE = "SELECT id, key_hash, role, name FROM api_keys WHERE revoked_at IS NULL"
SQL_KEY = "SELECT id, role, name FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"


@dataclass(frozen=True, slots=True)
class Principal:
    role: str  # admin | submit | read | player | anonymous
    user_id: str | None = None
    name: str | None = None
    key_id: int | None = None  # the API key it came from

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


def looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


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


@dataclass(frozen=True, slots=True)
class TokenRules:
    """How player tokens are checked. Without a secret, player tokens are refused."""

    secret: str | None = None
    max_lifetime_s: float = 86_400.0
    audience: str | None = None
    issuer: str | None = None


class Authenticator:
    """Turns a bearer credential into a Principal, or raises Unauthorized (401) / Unavailable (503)."""

    def __init__(self, pool: asyncpg.Pool, rules: TokenRules, failures: AuthFailures | None = None) -> None:
        self.pool, self.rules = pool, rules
        self.failures = failures or AuthFailures(0, 1.0)  # failed attempts per client address (limits.py)
        self._keys: dict[bytes, Principal] = {}
        self._lookups: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._allowance, self._refilled = float(LOOKUPS_PER_SECOND), time.monotonic()

    async def principal(self, credential: str | None, address: str | None = None) -> Principal:
        """`address`: the client's; one that failed too often lately is refused (TooMany) before any check."""
        if credential is None:
            return ANONYMOUS
        self.failures.check(address)
        try:
            if looks_like_jwt(credential):
                return self._player(credential)
            return await self._api_key(credential)
        except Unauthorized:
            self.failures.failed(address)
            raise

    async def from_header(
        self, header: str | None, api_key_header: str | None = None, address: str | None = None
    ) -> Principal:
        if header is None:
            if api_key_header is not None:
                raise Unauthorized("send the key as 'Authorization: Bearer <key>', not X-API-Key")
            return ANONYMOUS
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized("use 'Authorization: Bearer <api key or player token>'")
        return await self.principal(credential.strip(), address)

    # ---- API keys -----------------------------------------------------------------------------------------

    async def _api_key(self, key: str) -> Principal:
        h = _hash(key)
        found = self._keys.get(h)
        if found is not None:
            return found
        lookup = self._lookups.get(h)  # requests racing with the same new key share one look-up
        if lookup is None:
            if not key.startswith(KEY_PREFIX) or not self._may_look_up():
                raise Unauthorized(UNKNOWN_KEY)
            lookup = self._lookups[h] = asyncio.ensure_future(self._look_up(h))
            lookup.add_done_callback(lambda _: self._lookups.pop(h, None))
        found = await asyncio.shield(lookup)
        if found is None:
            raise Unauthorized(UNKNOWN_KEY)
        return found

    async def _look_up(self, h: bytes) -> Principal | None:
        try:
            row = await self.pool.fetchrow(SQL_KEY, h)
        except DB_DOWN:
            raise Unavailable("cannot verify the API key: the database is unavailable; retry") from None
        if row is None:
            return None
        found = self._keys[h] = Principal(row["role"], name=row["name"], key_id=row["id"])
        return found

    def _may_look_up(self) -> bool:
        now = time.monotonic()
        self._allowance = min(LOOKUPS_PER_SECOND, self._allowance + (now - self._refilled) * LOOKUPS_PER_SECOND)
        self._refilled = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    async def refresh(self) -> set[int]:
        """Reload the active keys; return the ids of keys that were active here and no longer are."""
        before = dict(self._keys)
        rows = await self.pool.fetch(SQL_ACTIVE)
        keys = {bytes(r["key_hash"]): Principal(r["role"], name=r["name"], key_id=r["id"]) for r in rows}
        gone = {p.key_id for h, p in before.items() if h not in keys and p.key_id is not None}
        # A key first used while the fetch ran may be younger than its snapshot: keep it (the next refresh
        # decides), rather than report it revoked.
        keys.update((h, p) for h, p in self._keys.items() if h not in before and h not in keys)
        self._keys = keys
        return gone

    async def run(self, revoked: Callable[[set[int]], None], interval: float = 2.0) -> None:
        """Keep the keys fresh; report revoked ones (their sockets are closed). Postgres away: keep the last."""
        while True:
            try:
                gone = await self.refresh()
                if gone:
                    log.info("API keys revoked: %s", ", ".join(map(str, sorted(gone))))
                    revoked(gone)
            except DB_DOWN as exc:
                log.debug("API key refresh failed: %s", exc)
            await asyncio.sleep(interval)

    # ---- player tokens ------------------------------------------------------------------------------------

    def _player(self, token: str) -> Principal:
        rules = self.rules
        if not rules.secret:
            raise Unauthorized("player tokens are not enabled on this server")
        required = ["exp", "sub"] + (["aud"] if rules.audience else []) + (["iss"] if rules.issuer else [])
        try:
            claims = jwt.decode(
                token, rules.secret, algorithms=["HS256"], audience=rules.audience, issuer=rules.issuer,
                options={"require": required},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise Unauthorized("player token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("player token is for another audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("player token comes from another issuer (iss)") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid player token: {exc}") from None
        now = time.time()
        exp, iat = claims["exp"], claims.get("iat")
        if exp - (iat if isinstance(iat, int | float) and iat <= now else now) > rules.max_lifetime_s:
            raise Unauthorized(
                f"player token lives longer than {rules.max_lifetime_s:.0f} s (exp - iat); issue shorter ones"
            )
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("invalid player token: bad sub")
        return Principal("player", user_id=sub)
