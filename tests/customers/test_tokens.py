"""Checking a customer token (chat/customers.py): what verifies a customer and what does not,
each refusal with its code and words a developer can act on; and whether a stored
verification still holds."""

import dataclasses
import datetime as dt
import time

import jwt
import pytest
from django.utils import timezone

from chat import customers, selectors, services
from chat.customers import CustomerTokenError, VerifiedCustomer
from chat.models import Conversation, Site
from tests.customers.helpers import sign, unsigned

SECRET = "s" * 43  # the length of a secret the desk makes (32 random bytes, base64url)
OTHER_SECRET = "o" * 43


@pytest.fixture
def site() -> Site:
    return Site(name="Shop", key="site_shop", identity_secret=SECRET)


def refused(token, site) -> CustomerTokenError:
    with pytest.raises(CustomerTokenError) as caught:
        customers.verify_token(token, site=site)
    assert caught.value.message  # every refusal says what to do
    if isinstance(token, str) and len(token) > 20:
        assert token not in caught.value.message  # nor echoes the token
    return caught.value


def test_a_valid_token_gives_the_customer_it_names(site):
    exp = int(time.time()) + 600
    token = sign(SECRET, "cust-42", name="Ada Lovelace", email="ada@example.com", exp=exp)
    customer = customers.verify_token(token, site=site)
    assert customer == VerifiedCustomer(
        id="cust-42",
        name="Ada Lovelace",
        email="ada@example.com",
        expires_at=dt.datetime.fromtimestamp(exp, dt.UTC),
    )
    assert customer.is_current()
    with pytest.raises(dataclasses.FrozenInstanceError):
        customer.id = "someone-else"


def test_name_and_email_are_optional_and_other_claims_are_allowed(site):
    token = sign(SECRET, "7", iat=int(time.time()), iss="shop", aud="anything", jti="x1")
    customer = customers.verify_token(token, site=site)
    assert (customer.id, customer.name, customer.email) == ("7", "", "")


def test_an_expired_token_is_refused_as_expired_past_the_leeway(site, settings):
    settings.CUSTOMERS = {**settings.CUSTOMERS, "TOKEN_LEEWAY_SECONDS": 30}
    assert refused(sign(SECRET, expires_in=-60), site).code == CustomerTokenError.EXPIRED
    # A few seconds past exp: within the clocks' leeway, still good.
    assert customers.verify_token(sign(SECRET, expires_in=-5), site=site).id == "cust-42"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(sign(OTHER_SECRET), id="another secret"),
        pytest.param(sign(SECRET, algorithm="HS512"), id="HS512 with the right secret"),
        pytest.param(sign(SECRET, algorithm="HS384"), id="HS384 with the right secret"),
        pytest.param(unsigned({"sub": "cust-42", "exp": int(time.time()) + 600}), id="alg none"),
        pytest.param(sign(SECRET)[:-3] + "abc", id="signature altered"),
        pytest.param("not.a.token", id="malformed"),
        pytest.param("abc", id="one segment"),
        pytest.param("", id="empty"),
        pytest.param("é" + sign(SECRET), id="not ascii"),
        pytest.param(None, id="not a string"),
    ],
)
def test_a_token_not_signed_with_hs256_and_this_sites_secret_is_invalid(site, token):
    assert refused(token, site).code == CustomerTokenError.INVALID


def test_a_token_of_another_site_is_simply_invalid(site):
    other = Site(name="Other", key="site_other", identity_secret=OTHER_SECRET)
    token = sign(OTHER_SECRET)
    assert customers.verify_token(token, site=other).id == "cust-42"
    error = refused(token, site)
    assert error.code == CustomerTokenError.INVALID and "signature" in error.message


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"sub": None}, "`sub`"),
        ({"exp": None}, "`exp`"),
        ({"sub": 42}, ""),
        ({"sub": ""}, ""),
        ({"sub": "x" * 201}, "`sub`"),
        ({"sub": " cust-42"}, "`sub`"),
        ({"sub": "cust\u200b42"}, "`sub`"),
        ({"exp": "9999999999"}, "`exp`"),
        ({"exp": 10**20}, "`exp`"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"email": "not-an-address"}, "`email`"),
        ({"email": 5}, "`email`"),
        ({"name": "x" * 201}, "`name`"),
        ({"name": "Ada\u0000"}, "`name`"),
    ],
)
def test_missing_or_unusable_claims_make_a_token_invalid(site, claims, named):
    error = refused(sign(SECRET, **({"sub": "cust-42"} | claims)), site)
    assert error.code == CustomerTokenError.INVALID
    assert named in error.message


def test_an_oversized_token_is_refused_before_anything_else(site, settings):
    token = sign(SECRET, padding="x" * 5000)
    assert len(token) > settings.CUSTOMERS["TOKEN_MAX_BYTES"]
    assert refused(token, site).code == CustomerTokenError.TOO_LARGE
    # Even for a site without a secret: the size is checked first.
    assert refused(token, Site(name="none")).code == CustomerTokenError.TOO_LARGE


def test_without_an_identity_secret_no_token_can_be_checked(settings):
    # Conversations of no site (the demo page's) have a secret only while the demo page is on.
    settings.DEMO_PAGE = False
    for site in (Site(name="No secret yet"), None):
        error = refused(sign(SECRET), site)
        assert error.code == CustomerTokenError.NO_SECRET
        assert "site_identity_secret" in error.message
    settings.DEMO_PAGE = True
    assert refused(sign(SECRET), None).code == CustomerTokenError.INVALID  # not its secret


def test_a_verification_is_current_until_its_expiry_and_the_leeway(settings):
    settings.CUSTOMERS = {**settings.CUSTOMERS, "TOKEN_LEEWAY_SECONDS": 30}
    now = timezone.now()
    customer = VerifiedCustomer(id="1", name="", email="", expires_at=now)
    assert customer.is_current(now + dt.timedelta(seconds=29))
    assert not customer.is_current(now + dt.timedelta(seconds=31))


def test_an_api_key_vouches_for_the_configured_time(settings):
    settings.CUSTOMERS = {**settings.CUSTOMERS, "API_VERIFIED_SECONDS": 120}
    customer = customers.vouched_by_api_key(id="cust-9", email="kim@example.com")
    left = (customer.expires_at - timezone.now()).total_seconds()
    assert 115 < left <= 120 and customer.email == "kim@example.com"
    with pytest.raises(ValueError, match="sub"):
        customers.vouched_by_api_key(id=" padded ")


# --- what is stored, and the one question later code asks --------------------------------------


@pytest.mark.django_db
def test_verified_customer_is_the_stored_one_only_while_it_holds(settings):
    settings.CUSTOMERS = {**settings.CUSTOMERS, "TOKEN_LEEWAY_SECONDS": 0}
    conversation, _ = services.conversation_start()
    assert selectors.verified_customer(conversation_id=conversation.pk) is None

    soon = timezone.now() + dt.timedelta(minutes=5)
    customer = VerifiedCustomer(id="cust-42", name="Ada", email="", expires_at=soon)
    services.customer_verify(conversation=conversation, customer=customer)
    found = selectors.verified_customer(conversation_id=conversation.pk)
    assert (found.id, found.name) == ("cust-42", "Ada")
    assert abs((found.expires_at - soon).total_seconds()) < 0.01

    Conversation.objects.filter(pk=conversation.pk).update(
        customer_verified_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert selectors.verified_customer(conversation_id=conversation.pk) is None
    # The record stays for staff to see.
    assert Conversation.objects.get(pk=conversation.pk).customer_id == "cust-42"


@pytest.mark.django_db
def test_a_conversation_never_changes_customer_and_keeps_the_later_expiry():
    conversation, _ = services.conversation_start()
    later = timezone.now() + dt.timedelta(hours=1)
    sooner = timezone.now() + dt.timedelta(minutes=1)
    first = VerifiedCustomer(id="cust-42", name="Ada", email="ada@example.com", expires_at=later)
    services.customer_verify(conversation=conversation, customer=first)
    # An older token of the same customer (another tab) does not shorten it.
    older = dataclasses.replace(first, name="", email="", expires_at=sooner)
    services.customer_verify(conversation=conversation, customer=older)
    with pytest.raises(services.CustomerMismatch):
        services.customer_verify(
            conversation=conversation, customer=dataclasses.replace(first, id="cust-43")
        )
    stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.customer_id, stored.customer_name, stored.customer_email) == (
        "cust-42",
        "Ada",
        "ada@example.com",
    )
    assert abs((stored.customer_verified_until - later).total_seconds()) < 0.01


def test_pyjwt_refuses_alg_none_even_with_the_algorithm_listed():
    """The guard this module relies on: decode() with algorithms=["HS256"] never accepts an
    unsigned token, whatever its header says."""
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(unsigned({"sub": "x", "exp": 2**31}), SECRET, algorithms=["HS256"])
