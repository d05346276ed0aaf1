"""API keys: roles, creation, verification (hash lookup, constant-time compare, short cache), revocation.

A key is `sc_` + 32 URL-safe characters and is shown once, at creation. Only its SHA-256 (hex) is stored, so a
leaked database does not leak usable keys. Bearer tokens are the same keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock, ids
from safecity.kernel.errors import NotFound
from safecity.sharing.principal import ApiKeyInfo, CreatedKey, Principal, Role
from safecity.store.apikeys import ApiKeyRepo
from safecity.store.engine import write_transaction

__all__ = [
    "ApiKeyInfo",
    "ApiKeyNotFound",
    "CreatedKey",
    "KeyService",
    "Principal",
    "Role",
    "hash_key",
    "new_key",
]

log = structlog.get_logger(__name__)

KEY_PREFIX = "sc_"
_PREFIX_CHARS = 10
_MAX_KEY_LEN = 256


class ApiKeyNotFound(NotFound):
    """No API key has this id."""

    code = "api_key.not_found"
    message_en = "API key {id} was not found."
    message_zh = "未找到 API 密钥 {id}。"


def hash_key(key: str) -> str:
    """Return the stored form of a key (SHA-256, hex)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """Return a new random key: `sc_` + 32 URL-safe characters (192 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


class KeyService:
    """Creates, verifies, lists and revokes API keys stored in `api_keys`."""

    def __init__(self, engine: AsyncEngine, *, cache_ttl_s: float = 10.0) -> None:
        self.engine = engine
        self.cache_ttl_s = cache_ttl_s
        # key hash -> (principal, monotonic expiry). Only verified keys are cached, so unknown keys cannot fill it.
        self._cache: dict[str, tuple[Principal, float]] = {}
        # key id -> last verified use, not written yet: bookkeeping never makes a request wait for, or fail on, a
        # write (a locked database answered 500 on /api/v1/me); `flush_last_used` writes them in the background.
        self._used: dict[str, datetime] = {}

    async def create(self, name: str, role: Role) -> CreatedKey:
        """Create a key with a role; the returned object holds the clear key (shown once)."""
        key = new_key()
        info = await self._insert(key, name, role)
        log.info("api_key_created", key_id=info.id, role=str(role))
        return CreatedKey(**info.model_dump(), key=key)

    async def ensure(self, key: str, name: str, role: Role) -> ApiKeyInfo:
        """Make sure a given key exists (e.g. the bootstrap admin key from settings); returns its info."""
        async with self.engine.connect() as conn:
            row = await ApiKeyRepo(conn).by_hash(hash_key(key))
        if row is not None:
            return ApiKeyInfo(**_public(row))
        info = await self._insert(key, name, role)
        log.info("api_key_ensured", key_id=info.id, role=str(role))
        return info

    async def _insert(self, key: str, name: str, role: Role) -> ApiKeyInfo:
        values = {
            "id": ids.new_id(),
            "name": name,
            "role": str(Role(role)),
            "prefix": key[:_PREFIX_CHARS],
            "key_hash": hash_key(key),
            "created_at": clock.now(),
        }
        async with write_transaction(self.engine) as conn:
            await ApiKeyRepo(conn).insert(values)
        return ApiKeyInfo(**values)

    async def verify(self, key: str) -> Principal | None:
        """Return the principal of a valid, unrevoked key, or None."""
        if not key or len(key) > _MAX_KEY_LEN:
            return None
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None:
            principal, expires = cached
            if time.monotonic() < expires:
                return principal
            del self._cache[digest]
        async with self.engine.connect() as conn:
            row = await ApiKeyRepo(conn).by_hash(digest)
        # The lookup is by hash; compare again in constant time so equality never leaks through timing.
        if row is None or not hmac.compare_digest(row["key_hash"], digest) or row["revoked_at"] is not None:
            return None
        # Noted at most once per cache period and written later, so verification stays off the write path.
        self._used[row["id"]] = clock.now()
        principal = Principal(key_id=row["id"], name=row["name"], role=Role(row["role"]))
        self._cache[digest] = (principal, time.monotonic() + self.cache_ttl_s)
        return principal

    async def flush_last_used(self) -> None:
        """Write the keys' last-use times noted since the last flush; on failure they are kept for the next one."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            async with write_transaction(self.engine) as conn:
                repo = ApiKeyRepo(conn)
                for key_id, at in used.items():
                    await repo.touch(key_id, at)
        except SQLAlchemyError as err:
            log.warning("api_key_last_used_not_written", keys=len(used), error=str(err))
            self._used = {**used, **self._used}

    async def revoke(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key now; it stops working at once in this process (other processes: within the cache TTL)."""
        async with write_transaction(self.engine) as conn:
            repo = ApiKeyRepo(conn)
            if not await repo.revoke(key_id, clock.now()):
                raise ApiKeyNotFound(what="API key", id=key_id)
            row = await repo.get(key_id)
        for digest, (principal, _) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]
        log.info("api_key_revoked", key_id=key_id)
        assert row is not None
        return self._info(row)

    async def get(self, key_id: str) -> ApiKeyInfo:
        """Return one key's info."""
        async with self.engine.connect() as conn:
            row = await ApiKeyRepo(conn).get(key_id)
        if row is None:
            raise ApiKeyNotFound(what="API key", id=key_id)
        return self._info(row)

    async def list(self, *, include_revoked: bool = True) -> list[ApiKeyInfo]:
        """Return every key's info, oldest first."""
        async with self.engine.connect() as conn:
            rows = await ApiKeyRepo(conn).list(include_revoked=include_revoked)
        return [self._info(row) for row in rows]

    def _info(self, row: dict[str, object]) -> ApiKeyInfo:
        """A key's public info, with a last use noted here and not written yet."""
        public = _public(row)
        noted = self._used.get(str(row["id"]))
        if noted is not None:
            public["last_used_at"] = noted
        return ApiKeyInfo(**public)

    def clear_cache(self) -> None:
        """Forget every cached verification."""
        self._cache.clear()


def _public(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if k != "key_hash"}
