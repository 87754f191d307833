"""One error base for the service; each front door maps these to its own medium once."""

from __future__ import annotations


class AppError(Exception):
    """An error the user can act on. ``code`` is stable and machine-readable."""

    code = "app_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(AppError):
    """The input cannot be used as it is (empty, too long, binary, malformed)."""

    code = "invalid_input"


class NotFound(AppError):
    code = "not_found"


class Conflict(AppError):
    """The request contradicts the current state (e.g. promoting a rejected model)."""

    code = "conflict"


class DataError(AppError):
    """The dataset file is missing, corrupt or not in the expected shape."""

    code = "data_error"


class BackendUnavailable(AppError):
    """No backend in the chain gave a usable answer."""

    code = "backend_unavailable"


class StoreUnavailable(AppError):
    """The store cannot be reached now (down, restarting, out of connections); retry shortly."""

    code = "store_unavailable"


class NoActiveModel(AppError):
    """No model version is active yet (train one first)."""

    code = "no_active_model"


class PermissionDenied(AppError):
    """The caller may not do this (another merchant's review, an admin-only action)."""

    code = "forbidden"


class Unauthenticated(AppError):
    """The caller did not prove who it is (no key, an unknown or revoked key, a bad signature)."""

    code = "unauthenticated"


class RateLimited(AppError):
    """Too many requests; ``retry_after_s`` says when to try again."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
