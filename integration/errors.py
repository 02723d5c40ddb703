"""One error type, one error shape: `{"error": code, "detail": sentence}`."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, detail: str, *, error: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if error:
            self.error = error
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


class BadRequest(AppError):
    status_code = 400


class Unauthorized(AppError):
    status_code = 401
    error = "unauthorized"


class NotFound(AppError):
    status_code = 404
    error = "not_found"


class Conflict(AppError):
    status_code = 409
    error = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    error = "body_too_large"


class Unavailable(AppError):
    status_code = 503
    error = "unavailable"
