"""Errors of the LLM gateway, rendered the way OpenAI clients expect.

Every class is a :class:`core.errors.CopilotError`, so the app's single
handler can still render it as problem+json; the gateway's OpenAI-compatible
routes render :meth:`GatewayError.to_openai` instead, with
:attr:`GatewayError.headers` (``Retry-After``, ``x-ratelimit-*``,
``WWW-Authenticate``) added to the response.

Status choices:

=========================  ======  ======================  =====================
class                      status  ``type``                ``code``
=========================  ======  ======================  =====================
InvalidApiKeyError         401     invalid_request_error   invalid_api_key
PermissionDeniedError      403     permission_error        permission_denied
RequestTooLargeError       413     invalid_request_error   request_too_large
RateLimitExceededError     429     requests / tokens       rate_limit_exceeded
BudgetExceededError        429     insufficient_quota      budget_exceeded
RateLimiterUnavailable...  503     api_error               rate_limiter_unavailable
InvalidRequestError        400     invalid_request_error   invalid_request
ModelNotFoundError         404     invalid_request_error   model_not_found
ModelModeError             400     invalid_request_error   model_not_supported
NoHealthyDeploymentError   503     api_error               no_healthy_deployment
DeploymentsBusyError       429     requests                deployments_busy
=========================  ======  ======================  =====================

A spent budget is a 429 with ``type`` ``insufficient_quota``, as OpenAI
answers an exhausted quota, rather than 402: OpenAI SDKs map 402 to a generic
status error, while 429 + ``Retry-After`` (the start of the next budget
period) is what their retry logic and our callers already handle.
"""

from __future__ import annotations

from typing import Any, ClassVar

from core.errors import CopilotError


class GatewayError(CopilotError):
    """Base class of the gateway's expected failures.

    Attributes:
        param: The request parameter at fault (OpenAI's ``param``), if any.
        headers: Response headers that belong with this error.
    """

    status = 500
    code = "gateway_error"
    title = "Gateway error"
    error_type: ClassVar[str] = "api_error"

    def __init__(
        self,
        detail: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def type(self) -> str:
        """OpenAI's error ``type`` for this error."""
        return self.error_type

    def to_openai(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error body: ``{"error": {"message", "type", "code", "param"}}``."""
        return {"error": {"message": self.detail, "type": self.type, "code": self.code, "param": self.param}}


class InvalidApiKeyError(GatewayError):
    """The key is missing, malformed, unknown, expired, rotated out or revoked."""

    status = 401
    code = "invalid_api_key"
    title = "Invalid API key"
    error_type = "invalid_request_error"

    def __init__(self, detail: str = "Incorrect API key provided.", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"www-authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class PermissionDeniedError(GatewayError):
    """The key is valid but its role or scopes do not allow this call."""

    status = 403
    code = "permission_denied"
    title = "Permission denied"
    error_type = "permission_error"


class RequestTooLargeError(GatewayError):
    """The request can never fit a limit (e.g. more tokens than the key's tokens/min)."""

    status = 413
    code = "request_too_large"
    title = "Request too large"
    error_type = "invalid_request_error"


class RateLimitExceededError(GatewayError):
    """A requests/min or tokens/min window is full.

    Attributes:
        limit: Which limit refused, e.g. ``"key.rpm"`` or ``"merchant.tpm"``.
        retry_after: Seconds after which the same request would be admitted
            (if nothing else is admitted meanwhile).
    """

    status = 429
    code = "rate_limit_exceeded"
    title = "Rate limit exceeded"
    error_type = "requests"

    def __init__(self, detail: str, *, limit: str, retry_after: float, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.limit = limit
        self.retry_after = retry_after

    @property
    def type(self) -> str:
        """``tokens`` for a tokens/min limit, ``requests`` otherwise (OpenAI's convention)."""
        return "tokens" if self.limit.endswith(".tpm") else "requests"


class BudgetExceededError(RateLimitExceededError):
    """A daily or monthly spend budget would be exceeded by this request's estimate."""

    code = "budget_exceeded"
    title = "Budget exceeded"
    error_type = "insufficient_quota"

    @property
    def type(self) -> str:
        """Always ``insufficient_quota``."""
        return self.error_type


class RateLimiterUnavailableError(GatewayError):
    """Limits cannot be enforced (Redis down and no local fallback allowed)."""

    status = 503
    code = "rate_limiter_unavailable"
    title = "Rate limiter unavailable"
    error_type = "api_error"


class InvalidRequestError(GatewayError):
    """The request is malformed or asks for something this gateway does not allow."""

    status = 400
    code = "invalid_request"
    title = "Invalid request"
    error_type = "invalid_request_error"


class ModelNotFoundError(GatewayError):
    """The requested alias is not configured (OpenAI's 404 ``model_not_found``)."""

    status = 404
    code = "model_not_found"
    title = "Model not found"
    error_type = "invalid_request_error"

    def __init__(self, alias: str, **kwargs: Any) -> None:
        kwargs.setdefault("param", "model")
        super().__init__(f"The model `{alias}` does not exist or you do not have access to it.", **kwargs)


class ModelModeError(GatewayError):
    """The alias exists but serves the other endpoint (e.g. chat on an embedding model)."""

    status = 400
    code = "model_not_supported"
    title = "Model not supported"
    error_type = "invalid_request_error"


class NoHealthyDeploymentError(GatewayError):
    """Every deployment of the alias and its fallbacks has an open circuit."""

    status = 503
    code = "no_healthy_deployment"
    title = "No healthy deployment"
    error_type = "api_error"


class DeploymentsBusyError(GatewayError):
    """Every usable deployment is at its concurrency cap (or running its half-open trial)."""

    status = 429
    code = "deployments_busy"
    title = "Deployments busy"
    error_type = "requests"


__all__ = [
    "BudgetExceededError",
    "DeploymentsBusyError",
    "GatewayError",
    "InvalidApiKeyError",
    "InvalidRequestError",
    "ModelModeError",
    "ModelNotFoundError",
    "NoHealthyDeploymentError",
    "PermissionDeniedError",
    "RateLimitExceededError",
    "RateLimiterUnavailableError",
    "RequestTooLargeError",
]
