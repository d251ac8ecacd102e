"""API key authentication for django-ninja operations: `auth=ApiKeyAuth("chat")`.

Every failure is an ApiError, which the API renders in its own shape (never ninja's
`{"detail": "Unauthorized"}`). In order:

1. the client's address has used up its failed authentications → 429 rate_limited;
2. no `Authorization: Bearer <key>` header, or not in that form → 401, counted as a failure;
3. a key that is unknown or revoked → 401 (one message for both), counted as a failure;
4. a key without the operation's scope → 403 forbidden;
5. the key's requests a minute used up → 429 rate_limited;
6. the key's tokens for today used up → 429 quota_exceeded.

On success the operation gets the ApiKey as `request.auth`, and `request.rate_limit` holds the
per-minute figures for the response's X-RateLimit-* headers (chat.api.ratelimit).
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from chat.api import keys, ratelimit
from chat.api.errors import FORBIDDEN, UNAUTHORIZED, ApiError
from chat.models import ApiKey, ApiScope
from runtime.aio import db

_HOW = "Send your API key as 'Authorization: Bearer <key>'"
# RFC 6750: a 401 names the scheme it expects.
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}


class ApiKeyAuth(HttpBearer):
    """Bearer authentication with an API key that has `scope`. An async callable, so on async
    operations the checks run in the event loop and only the database lookups use a thread;
    listed in the OpenAPI schema as the "ApiKeyAuth" HTTP bearer scheme."""

    openapi_description = (
        "An API key made with `manage.py create_api_key` or in admin, sent as "
        "`Authorization: Bearer csk_…`."
    )

    def __init__(self, scope: str) -> None:
        if scope not in ApiScope.values:
            raise ValueError(f"Unknown scope {scope!r}; choose from {', '.join(ApiScope.values)}.")
        self.scope = str(scope)  # ApiScope.CHAT → "chat", for messages
        super().__init__()

    async def __call__(self, request: HttpRequest) -> ApiKey:
        # Not HttpBearer.__call__: it returns None for a missing header, and ninja would then
        # answer with its own 401 body, uncounted.
        ip = ratelimit.request_client_ip(request)
        refusal = await ratelimit.failed_auth_exhausted(ip)
        if refusal is not None:
            raise refusal
        scheme, _, token = request.headers.get(self.header, "").partition(" ")
        token = token.strip()
        if scheme.lower() != self.openapi_scheme or not token or " " in token:
            await ratelimit.count_failed_auth(ip)
            raise ApiError(
                401,
                UNAUTHORIZED,
                f"{_HOW}; this request had no key in that form.",
                headers=dict(_CHALLENGE),
            )
        return await self.authenticate(request, token)

    async def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        key = await db(keys.key_for_secret)(token)
        if key is None:
            await ratelimit.count_failed_auth(ratelimit.request_client_ip(request))
            raise ApiError(
                401,
                UNAUTHORIZED,
                f"This API key is unknown or has been revoked. {_HOW}, with a key made by "
                "`manage.py create_api_key` or in admin.",
                headers=dict(_CHALLENGE),
            )
        if not key.allows(self.scope):
            raise ApiError(
                403,
                FORBIDDEN,
                f"This API key lacks the '{self.scope}' scope; add it to the key in admin, or "
                f"use a key made with --scopes {self.scope}.",
            )
        state = await ratelimit.check_request(key)
        await ratelimit.check_tokens(key)
        request.rate_limit = state
        if keys.touch_due(key):
            await db(keys.touch_last_used)(key)
        return key
