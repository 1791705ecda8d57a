"""Errors of the metrics layer (expected failures, rendered as problem+json)."""

from __future__ import annotations

from core.errors import NotFoundError, ValidationFailedError


class UnsupportedQueryError(ValidationFailedError):
    """The metric has no definition for the requested breakdown or filter."""

    code = "metric_unsupported"
    title = "Metric not available that way"


class MerchantNotVisibleError(NotFoundError):
    """The merchant does not exist or the session may not see it."""

    code = "merchant_not_found"
    title = "Merchant not found"


__all__ = ["MerchantNotVisibleError", "UnsupportedQueryError"]
