"""Gateway errors render as OpenAI error bodies and keep the project's error tree."""

from __future__ import annotations

import pytest

from core.errors import CopilotError
from gateway.errors import (
    BudgetExceededError,
    GatewayError,
    InvalidApiKeyError,
    PermissionDeniedError,
    RateLimiterUnavailableError,
    RateLimitExceededError,
    RequestTooLargeError,
)
from gateway.ratelimit import _duration


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (InvalidApiKeyError(), 401, "invalid_request_error", "invalid_api_key"),
        (PermissionDeniedError("no", param="model"), 403, "permission_error", "permission_denied"),
        (RequestTooLargeError("big"), 413, "invalid_request_error", "request_too_large"),
        (RateLimitExceededError("slow", limit="key.rpm", retry_after=2), 429, "requests", "rate_limit_exceeded"),
        (RateLimitExceededError("slow", limit="merchant.tpm", retry_after=2), 429, "tokens", "rate_limit_exceeded"),
        (
            BudgetExceededError("spent", limit="key.daily_budget", retry_after=9),
            429,
            "insufficient_quota",
            "budget_exceeded",
        ),
        (RateLimiterUnavailableError("down"), 503, "api_error", "rate_limiter_unavailable"),
    ],
)
def test_openai_error_bodies(error: GatewayError, status: int, type_: str, code: str) -> None:
    assert isinstance(error, CopilotError)
    assert error.status == status
    body = error.to_openai()
    assert body == {"error": {"message": str(error), "type": type_, "code": code, "param": error.param}}


def test_invalid_key_asks_for_a_bearer_token() -> None:
    assert InvalidApiKeyError().headers == {"www-authenticate": "Bearer"}
    assert PermissionDeniedError("no", param="model").to_openai()["error"]["param"] == "model"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.02, "20ms"), (1, "1s"), (8.64, "8.64s"), (60, "1m0s"), (360, "6m0s"), (3723.5, "1h2m3.5s")],
)
def test_reset_durations_use_openai_format(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
