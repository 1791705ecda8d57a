"""Column type shorthands shared by the models."""

from __future__ import annotations

from typing import Annotated, Any

from sqlalchemy import BigInteger, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import mapped_column

MerchantId = Annotated[str, mapped_column(String(64), nullable=False)]
Money = Annotated[int, mapped_column(BigInteger, nullable=False, default=0, server_default="0")]
Currency = Annotated[str, mapped_column(String(3), nullable=False)]
Json = Annotated[Any, mapped_column(JSONB, nullable=False, server_default="{}")]


def check_in(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK constraint restricting ``column`` to ``values``."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"
