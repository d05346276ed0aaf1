"""Authentication (API keys in `X-API-Key` or `Authorization: Bearer`), role checks, and the key admin routes.

Use `require(*roles)` on every router or route; admin always passes:

    router = APIRouter(dependencies=[require(Role.OPERATOR)])
    async def handler(principal: Principal = require(Role.DISPATCHER)) -> ...
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from safecity.api.deps import KeysDep
from safecity.api.problems import PROBLEM_RESPONSES
from safecity.kernel.errors import Forbidden, Unauthorized
from safecity.sharing.principal import ApiKeyInfo, CreatedKey, Principal, Role

__all__ = ["AdminOnly", "Authenticated", "Principal", "Role", "authenticate", "keys_router", "require"]

api_key_header = APIKeyHeader(
    name="X-API-Key", scheme_name="ApiKey", description="An API key (`sc_...`).", auto_error=False
)
bearer_scheme = HTTPBearer(scheme_name="Bearer", description="An API key sent as a bearer token.", auto_error=False)


async def authenticate(
    request: Request,
    keys: KeysDep,
    api_key: Annotated[str | None, Security(api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Principal:
    """Return the caller's principal; 401 problem when no valid, unrevoked key is given."""
    key = api_key or (bearer.credentials if bearer is not None else None)
    if not key:
        raise Unauthorized()
    principal = await keys.verify(key)
    if principal is None:
        raise Unauthorized()
    request.state.principal = principal
    return principal


def require(*roles: Role) -> Any:
    """A dependency that admits callers with one of `roles` (admin always); 401 or 403 problem otherwise."""
    allowed = frozenset(roles) | {Role.ADMIN}
    needed = ", ".join(sorted(str(r) for r in allowed))

    async def check_role(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(roles=needed)
        return principal

    return Depends(check_role)


ANY_ROLE = tuple(Role)
# Route parameter types: `caller: AdminOnly` / `caller: Authenticated`.
AdminOnly = Annotated[Principal, require()]
Authenticated = Annotated[Principal, require(*ANY_ROLE)]


class KeyCreate(BaseModel):
    """A request for a new API key."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", description="Who holds it.")
    role: Role


class Me(BaseModel):
    """The authenticated caller."""

    key_id: str
    name: str
    role: Role


KeyId = Annotated[str, Path(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$", description="Key id.")]

keys_router = APIRouter(prefix="/api/v1", tags=["auth"], responses=PROBLEM_RESPONSES)


@keys_router.get("/me", response_model=Me, summary="Who am I")
async def whoami(principal: Authenticated) -> Me:
    """Return the caller's key id, name and role."""
    return Me(key_id=principal.key_id, name=principal.name, role=principal.role)


@keys_router.post("/keys", response_model=CreatedKey, status_code=201, summary="Create an API key (shown once)")
async def create_key(body: KeyCreate, keys: KeysDep, _: AdminOnly) -> CreatedKey:
    """Create a key for a role; the response holds the key, which cannot be recovered later."""
    return await keys.create(body.name, body.role)


@keys_router.get("/keys", response_model=list[ApiKeyInfo], summary="List API keys")
async def list_keys(keys: KeysDep, _: AdminOnly) -> list[ApiKeyInfo]:
    """List every key (never the keys themselves)."""
    return await keys.list()


@keys_router.get("/keys/{key_id}", response_model=ApiKeyInfo, summary="Get an API key")
async def get_key(keys: KeysDep, key_id: KeyId, _: AdminOnly) -> ApiKeyInfo:
    """Return one key's info."""
    return await keys.get(key_id)


@keys_router.delete("/keys/{key_id}", response_model=ApiKeyInfo, summary="Revoke an API key")
async def revoke_key(keys: KeysDep, key_id: KeyId, _: AdminOnly) -> ApiKeyInfo:
    """Revoke a key; it stops working at once."""
    return await keys.revoke(key_id)
