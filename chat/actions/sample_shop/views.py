"""SAMPLE DATA: the sample shop's order API, what a company's back end would answer.

Every request needs `Authorization: Bearer <SAMPLE_SHOP_TOKEN>`. An order is shown only to
its own customer (`?customer=<id>`, the id a verified customer's action sends) or to whoever
gives the e-mail address it was placed with (`?email=`); any other request gets the same 404
as an order that does not exist, so order numbers cannot be probed. Off (404 for everything)
unless ACTIONS_SAMPLE_SHOP is on.
"""

import hmac
import logging
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from redis.exceptions import RedisError

from chat.actions.sample_shop import orders

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


def _not_found() -> JsonResponse:
    return _error(404, "not_found", "No order with this number for this customer.")


def _shop_api(view):
    """On only with ACTIONS_SAMPLE_SHOP, behind the bearer token; Redis away is a 503."""

    @wraps(view)
    async def wrapper(request: HttpRequest, *args, **kwargs):
        if not settings.ACTIONS["SAMPLE_SHOP"]:
            return _error(404, "off", "The sample shop is off (ACTIONS_SAMPLE_SHOP).")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = settings.ACTIONS["SAMPLE_SHOP_TOKEN"]
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()
        ):
            response = _error(401, "unauthorized", "A valid bearer token is needed.")
            response["WWW-Authenticate"] = 'Bearer realm="sample-shop"'
            return response
        try:
            return await view(request, *args, **kwargs)
        except RedisError as exc:
            log.warning("Sample shop: Redis unavailable (%s)", type(exc).__name__)
            return _error(503, "unavailable", "The shop cannot answer right now.")

    return csrf_exempt(wrapper)


def _owned(request: HttpRequest, order: orders.Order | None) -> bool:
    """The order is the customer's (and, when an e-mail is given too, that one's)."""
    customer = request.GET.get("customer", "").strip()
    email = request.GET.get("email", "").strip().lower()
    if order is None or not (customer or email):
        return False
    return (
        not customer or hmac.compare_digest(customer.encode(), order.customer_id.encode())
    ) and (not email or email == order.email)


@require_GET
@_shop_api
async def order(request: HttpRequest, order_id: str):
    found = orders.find(order_id)
    if not (request.GET.get("customer") or request.GET.get("email")):
        return _error(400, "customer_needed", "Give ?customer=<id> or ?email=<address>.")
    if not _owned(request, found):
        return _not_found()
    return JsonResponse(orders.described(found, await orders.status_of(found)))


@require_GET
@_shop_api
async def latest_order(request: HttpRequest):
    """The customer's most recent order (`?customer=<id>` only: an e-mail address alone
    names an order, not a customer's history)."""
    customer = request.GET.get("customer", "").strip()
    if not customer:
        return _error(400, "customer_needed", "Give ?customer=<id>.")
    found = orders.latest_of(customer)
    if found is None:
        return _error(404, "not_found", "This customer has no orders.")
    return JsonResponse(orders.described(found, await orders.status_of(found)))


@require_POST
@_shop_api
async def cancel(request: HttpRequest, order_id: str):
    found = orders.find(order_id)
    if not request.GET.get("customer"):
        return _error(400, "customer_needed", "Give ?customer=<id>: only the customer cancels.")
    if not _owned(request, found):
        return _not_found()
    if not await orders.cancel(found):
        status = await orders.status_of(found)
        return _error(
            409,
            "not_cancellable",
            f"Order {found.id} is {status}: only an order still being prepared can be cancelled.",
        )
    return JsonResponse(orders.described(found, orders.CANCELLED))
