"""API keys to accounts. Every /v1 and gateway call names its caller by key; one key, one account.

Another account's resources answer 404 (never 403), so nothing leaks about their existence.
"""

from __future__ import annotations

from fastapi import Depends, Request

from fwemu.emulator.errors import ApiError, unauthenticated
from fwemu.emulator.services import Services, get_services

PUBLIC_ACCOUNT = "fireworks"  # base models live here and are readable by every account


def api_key_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def caller_account(request: Request, services: Services = Depends(get_services)) -> str:
    key = api_key_of(request)
    if not key:
        raise unauthenticated("missing API key: send it in the X-Api-Key header")
    account = services.settings.api_keys.get(key)
    if account is None:
        raise unauthenticated("the API key is not valid")
    return account


def require_same_account(caller: str, account: str, what: str) -> None:
    """Raise the same 404 a missing resource gets when the path names another account."""
    if caller != account:
        raise ApiError("NOT_FOUND", f"{what} not found")
