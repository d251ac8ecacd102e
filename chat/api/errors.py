"""One error type for both APIs; each API renders it in its own shape.

The desk's API: `{"error": {"code", "message", "field"?}}`. The OpenAI-compatible API:
OpenAI's `{"error": {"message", "type", "param", "code"}}`.
"""

import dataclasses
import logging

from django.db import DatabaseError
from django.http import Http404
from ninja.errors import AuthenticationError, HttpError, ValidationError
from redis.exceptions import RedisError

log = logging.getLogger("chat.api")


@dataclasses.dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


# Codes, one per kind of failure, the same in both APIs.
UNAUTHORIZED = "unauthorized"  # 401: no key, a wrong one, or a revoked one
FORBIDDEN = "forbidden"  # 403: the key lacks the scope
NOT_FOUND = "not_found"  # 404
CONFLICT = "conflict"  # 409: an answer is already under way in this session
TOO_LARGE = "too_large"  # 413
INVALID = "invalid_request"  # 400/422: malformed, or a value out of range
UNSUPPORTED = "unsupported_parameter"  # 400: an OpenAI parameter the desk does not support
RATE_LIMITED = "rate_limited"  # 429: requests a minute
QUOTA_EXCEEDED = "quota_exceeded"  # 429: tokens a day
UNAVAILABLE = "unavailable"  # 503: storage down


def desk_body(error: ApiError) -> dict:
    body = {"code": error.code, "message": error.message}
    if error.field:
        body["field"] = error.field
    return {"error": body}


def openai_body(error: ApiError) -> dict:
    """OpenAI's shape: `type` is its category of the error, `param` the field."""
    kind = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        503: "server_error",
    }.get(error.status, "invalid_request_error")
    if error.code == QUOTA_EXCEEDED:
        kind = "insufficient_quota"
    return {
        "error": {"message": error.message, "type": kind, "param": error.field, "code": error.code}
    }


def from_validation(errors: list[dict]) -> ApiError:
    """The first of pydantic's errors, in words a developer acts on, naming the field."""
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "payload")]
    field = ".".join(loc) or None
    message = first.get("msg", "Invalid request.")
    if first.get("type") == "extra_forbidden":
        message = f"Unknown or unsupported parameter '{field}'."
    elif field:
        message = f"{field}: {message}"
    return ApiError(422, INVALID, message, field=field)


def install(api, render, *, invalid_status: int = 422) -> None:
    """Every failure of `api` rendered by `render(ApiError) -> dict`, never as Django's 500
    page: a bug is logged and answered as an internal error in the API's own shape.
    `invalid_status`: the status of a request that fails its schema (OpenAI's is 400)."""

    def respond(request, error: ApiError):
        response = api.create_response(request, render(error), status=error.status)
        for name, value in error.headers.items():
            response[name] = value
        return response

    api.add_exception_handler(ApiError, respond)

    def invalid(request, exc: ValidationError):
        error = from_validation(exc.errors)
        error.status = invalid_status
        if error.message.startswith("Unknown or unsupported parameter"):
            error.code, error.status = UNSUPPORTED, 400
        return respond(request, error)

    api.add_exception_handler(ValidationError, invalid)
    api.add_exception_handler(
        AuthenticationError,
        lambda request, exc: respond(
            request,
            ApiError(401, UNAUTHORIZED, "Send your API key as 'Authorization: Bearer <key>'."),
        ),
    )

    def http_error(request, exc: HttpError):
        if exc.status_code == 400 and "parse" in exc.message.lower():  # ninja's body parsing
            return respond(
                request, ApiError(invalid_status, INVALID, "The request body is not valid JSON.")
            )
        return respond(
            request,
            ApiError(
                exc.status_code, INVALID if exc.status_code < 500 else UNAVAILABLE, exc.message
            ),
        )

    api.add_exception_handler(HttpError, http_error)
    api.add_exception_handler(
        Http404, lambda request, exc: respond(request, ApiError(404, NOT_FOUND, "Not found."))
    )

    def storage_down(request, exc: Exception):
        log.warning(
            "API request %s %s: storage unavailable (%s)",
            request.method,
            request.path,
            exc.__class__.__name__,
        )
        return respond(
            request,
            ApiError(
                503,
                UNAVAILABLE,
                "The desk cannot reach its storage right now. Please try again in a moment.",
                headers={"Retry-After": "5"},
            ),
        )

    api.add_exception_handler(DatabaseError, storage_down)
    api.add_exception_handler(RedisError, storage_down)

    def internal(request, exc: Exception):
        log.exception("API request %s %s failed", request.method, request.path)
        return respond(
            request,
            ApiError(
                500,
                "internal_error",
                "Something went wrong on our side; it was logged. Please try again.",
            ),
        )

    api.add_exception_handler(Exception, internal)
