"""The project's error tree.

Every expected failure is a :class:`CopilotError`. Each carries an HTTP status
and a stable ``code`` so one handler can render it as problem+json (RFC 9457)
and the CLI can print it as a single line. Anything else is a bug.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CopilotError(Exception):
    """Base class for expected, user-facing failures."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def __str__(self) -> str:
        return self.detail


class ConfigurationError(CopilotError):
    """Settings are missing, invalid or inconsistent."""

    status = 500
    code = "configuration"
    title = "Configuration error"


class ServiceUnavailableError(CopilotError):
    """A backing service (PostgreSQL, Redis, a provider) cannot be reached."""

    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class EmbeddedServiceError(ServiceUnavailableError):
    """An embedded PostgreSQL or Redis could not be started or stopped."""

    code = "embedded_service"
    title = "Embedded service error"


class NotFoundError(CopilotError):
    """A resource does not exist, or is not visible to the caller."""

    status = 404
    code = "not_found"
    title = "Not found"


class ValidationFailedError(CopilotError):
    """Input was understood but is not acceptable."""

    status = 422
    code = "validation_failed"
    title = "Validation failed"
