"""One error type, one error shape: `{"error": code, "detail": sentence}`."""

from __future__ import annotations

import math
from typing import Any


class AppError(Exception):
    status_code = 400
    error = "bad_request"
    retry_after: float | None = None  # seconds; sent as Retry-After when set

    def __init__(
        self,
        detail: str,
        *,
        error: str | None = None,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if error:
            self.error = error
        if retry_after is not None:
            self.retry_after = retry_after
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}

    def headers(self) -> dict[str, str] | None:
        if self.retry_after is None:
            return None
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class BadRequest(AppError):
    status_code = 400


class Unauthorized(AppError):
    status_code = 401
    error = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    error = "forbidden"


class NotFound(AppError):
    status_code = 404
    error = "not_found"


class Conflict(AppError):
    status_code = 409
    error = "conflict"


class Unprocessable(AppError):
    """Well-formed but unusable: a mapping or trigger that does not compile, a tracking plan that
    does not validate; the caller names the error and the path at fault (`field`)."""

    status_code = 422
    error = "unprocessable"


class PayloadTooLarge(AppError):
    status_code = 413
    error = "body_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    error = "unsupported_media_type"


class TooManyRequests(AppError):
    status_code = 429
    error = "too_many_requests"
    retry_after = 60.0


class Unavailable(AppError):
    """Transient: the caller should retry (Segment retries 503 for hours)."""

    status_code = 503
    error = "unavailable"
    retry_after = 5.0


class ClientGone(AppError):
    """The client went away before its request was read: no answer can reach it. Counted apart
    (499, as nginx does) and logged quietly: it is not a server error."""

    status_code = 499
    error = "client_disconnected"
