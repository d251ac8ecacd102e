"""Verified customers: the company's own back end vouches for who a widget visitor or an API
caller is, so that the desk may later act on that customer's data.

Through the widget, the back end signs a JWT with its site's identity secret (HS256): `sub`
(its customer id), optionally `name` and `email`, and `exp` (required). `verify_token` checks
one and returns the customer, or raises CustomerTokenError with a code and a message that
says what to do. Through the chat API, a key with the "customers" scope names the customer
itself (`vouched_by_api_key`). docs/verified-customers.md is the guide for the company.

What is stored on the conversation (chat.services.customer_verify) and whether it still holds
(chat.selectors.verified_customer) live with the other writes and reads.
"""

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone

from chat.models import Conversation, Site
from chat.text import TextError, clean_text

ALGORITHM = "HS256"
MAX_ID_CHARS = 200  # Conversation.customer_id
MAX_NAME_CHARS = 200  # Conversation.customer_name
MAX_EMAIL_CHARS = 254  # Conversation.customer_email (an EmailField)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SIGN_HOW = (
    "Sign it with HS256 and the site's identity secret, with `sub` and `exp` "
    "(docs/verified-customers.md)."
)


@dataclass(frozen=True)
class VerifiedCustomer:
    id: str  # the company's own id for the customer
    name: str  # "" when not given
    email: str  # "" when not given
    expires_at: dt.datetime  # until when the company vouches for them

    def is_current(self, now: dt.datetime | None = None) -> bool:
        """Whether the verification still holds, with the same leeway a token's `exp` gets."""
        leeway = dt.timedelta(seconds=settings.CUSTOMERS["TOKEN_LEEWAY_SECONDS"])
        return self.expires_at + leeway > (now or timezone.now())


class CustomerTokenError(Exception):
    """A customer token that verifies no one; `code` is one of the constants below."""

    EXPIRED = "expired"
    INVALID = "invalid"  # bad signature, malformed, another algorithm than HS256, bad claims
    NO_SECRET = "no_secret"  # the site has no identity secret to check it with
    TOO_LARGE = "too_large"

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(reason: str) -> CustomerTokenError:
    return CustomerTokenError(
        CustomerTokenError.INVALID, f"The customer token was refused: {reason}. {_SIGN_HOW}"
    )


# Fixed words for PyJWT's refusals rather than its own messages, which may quote parts of the
# token: whatever the client sent, the error frame it gets back is plain text of ours.
_REASONS = (
    (jwt.InvalidSignatureError, "its signature does not match this site's identity secret"),
    (jwt.InvalidAlgorithmError, f"it is not signed with {ALGORITHM}"),
    (jwt.ImmatureSignatureError, "it is not valid yet (its nbf or iat is in the future)"),
)


def verify_token(token: object, *, site: Site | None) -> VerifiedCustomer:
    """The customer a token signed with `site`'s identity secret vouches for, or
    CustomerTokenError. A token signed with another site's secret is simply invalid."""
    max_bytes = settings.CUSTOMERS["TOKEN_MAX_BYTES"]
    if not isinstance(token, str) or not token.strip():
        raise _invalid("it is empty")
    if len(token) > max_bytes or len(token.encode("utf-8", "surrogatepass")) > max_bytes:
        raise CustomerTokenError(
            CustomerTokenError.TOO_LARGE,
            f"The customer token is over {max_bytes} bytes: sign only `sub`, `exp` and, if "
            "you like, `name` and `email`.",
        )
    secret = site.identity_secret if site is not None else demo_identity_secret()
    if not secret:
        raise CustomerTokenError(
            CustomerTokenError.NO_SECRET,
            "This site has no identity secret, so customer tokens cannot be checked: make one "
            "with `manage.py site_identity_secret SITE_KEY` or in admin (Sites).",
        )
    if not token.isascii():  # a JWT is base64url and dots
        raise _invalid("it is malformed")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=settings.CUSTOMERS["TOKEN_LEEWAY_SECONDS"],
            # The site's own secret binds a token to the site: no audience to check.
            options={"require": ["exp", "sub"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise CustomerTokenError(
            CustomerTokenError.EXPIRED,
            "The customer token has expired: have your back end sign a fresh one and hand it "
            "to the widget (CSDeskWidget.setCustomerToken).",
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid(f"it has no `{exc.claim}` claim") from None
    except jwt.InvalidTokenError as exc:
        reason = next((words for kind, words in _REASONS if isinstance(exc, kind)), None)
        raise _invalid(reason or "it is malformed") from None
    exp = claims["exp"]
    # NumericDate (RFC 7519); PyJWT also lets a string of digits through.
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise _invalid("its `exp` is not a number of seconds since 1970")
    try:
        expires_at = dt.datetime.fromtimestamp(exp, dt.UTC)
    except (OverflowError, OSError, ValueError):  # beyond what a date can hold
        raise _invalid("its `exp` is out of range") from None
    try:
        return VerifiedCustomer(
            id=clean_id(claims["sub"]),
            name=clean_name(claims.get("name")),
            email=clean_email(claims.get("email")),
            expires_at=expires_at,
        )
    except ValueError as exc:
        raise _invalid(str(exc)) from None


def demo_identity_secret() -> str:
    """The identity secret of the demo page's conversations (no site), while DEMO_PAGE is on:
    the page signs in its visitor as a sample customer with it (chat.views.demo). Derived from
    SECRET_KEY, so no one without it can sign; "" (no secret: nobody is verified) once the
    demo page is off, as in production."""
    if not settings.DEMO_PAGE:
        return ""
    return hmac.new(
        settings.SECRET_KEY.encode(), b"cs-desk demo page customers", hashlib.sha256
    ).hexdigest()


def demo_customer_token(*, sub: str, name: str, email: str, hours: float = 12) -> str:
    """A token for the demo page's sample customer ("" while the demo page is off)."""
    secret = demo_identity_secret()
    if not secret:
        return ""
    exp = int(timezone.now().timestamp() + hours * 3600)
    return jwt.encode(
        {"sub": sub, "name": name, "email": email, "exp": exp}, secret, algorithm=ALGORITHM
    )


def vouched_by_api_key(*, id: str, name: str = "", email: str = "") -> VerifiedCustomer:
    """A customer a chat API call names (its key has the "customers" scope, checked by the
    caller): verified for CUSTOMERS["API_VERIFIED_SECONDS"] from now, as each such call
    renews. Raises ValueError for values clean_id, clean_name or clean_email refuse."""
    seconds = settings.CUSTOMERS["API_VERIFIED_SECONDS"]
    return VerifiedCustomer(
        id=clean_id(id),
        name=clean_name(name),
        email=clean_email(email),
        expires_at=timezone.now() + dt.timedelta(seconds=seconds),
    )


def customer_of(conversation: Conversation) -> VerifiedCustomer | None:
    """The verified customer the conversation records, current or not (`is_current` tells);
    None when no one was ever verified in it. No query: the fields as loaded."""
    if not conversation.customer_id:
        return None
    return VerifiedCustomer(
        id=conversation.customer_id,
        name=conversation.customer_name,
        email=conversation.customer_email,
        expires_at=conversation.customer_verified_until or _EPOCH,
    )


# --- the claims, the same from a token and from the API ---------------------------------------


def clean_id(value: object) -> str:
    """The customer id exactly as given: it must match the company's records, so it is
    refused, never altered (no surrounding spaces, no control or invisible separators)."""
    if not isinstance(value, str) or not value:
        raise ValueError("the customer id (`sub`) must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"the customer id (`sub`) is longer than {MAX_ID_CHARS} characters")
    # isprintable() is false for controls, surrogates and every separator but the space.
    if value != value.strip() or not value.isprintable():
        raise ValueError(
            "the customer id (`sub`) has surrounding spaces or characters that cannot be shown"
        )
    return value


def clean_name(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("`name` must be a string")
    try:
        return clean_text(
            value, field="name", required=False, single_line=True, max_chars=MAX_NAME_CHARS
        )
    except TextError as exc:
        raise ValueError(f"`name`: {exc.message}") from None


def clean_email(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("`email` must be a string")
    try:
        email = clean_text(value, field="e-mail address", required=False, single_line=True)
        if email and len(email) > MAX_EMAIL_CHARS:
            raise ValueError("`email` is too long")
        if email:
            validate_email(email)
    except TextError as exc:
        raise ValueError(f"`email`: {exc.message}") from None
    except ValidationError:
        raise ValueError("`email` is not an e-mail address") from None
    return email
