"""Who calls: roles, the authenticated principal and what the API shows of a key (no storage here).

The API imports these types; `safecity.sharing.keys` holds the service that stores and verifies keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Role(StrEnum):
    """Who a caller is; every HTTP endpoint requires one of these (admin always passes)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    DISPATCHER = "dispatcher"
    RESPONDER = "responder"  # community responder (guards, volunteers)
    READER = "reader"  # department reader
    INGEST = "ingest"  # device / ingest client
    CITIZEN = "citizen"


class ApiKeyInfo(BaseModel):
    """What is known about a key, never the key itself."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    role: Role
    prefix: str = Field(description="First characters of the key, to recognise it.")
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class CreatedKey(ApiKeyInfo):
    """A freshly created key: the only time the clear key is returned."""

    key: str = Field(description="The API key. It is shown once and cannot be recovered.")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    key_id: str
    name: str
    role: Role
