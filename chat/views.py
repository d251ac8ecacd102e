import logging

from django.conf import settings
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.http import require_GET
from redis.exceptions import RedisError

from chat import customers, selectors
from chat.actions.sample_shop import orders as sample_shop_orders
from inference_worker import pool
from runtime.aio import db
from runtime.redis_client import get_redis

logger = logging.getLogger(__name__)


@require_GET
def demo(request):
    """A plain page where a visitor chats with the bot over /ws/chat/, when DEMO_PAGE is on."""
    if not settings.DEMO_PAGE:
        raise Http404("The demo page is off (DEMO_PAGE).")
    # SAMPLE DATA: with the sample shop on, the visitor chats as its sample customer, whose
    # orders the sample actions look up and cancel (chat/actions/sample/).
    sample = settings.ACTIONS["SAMPLE_SHOP"]
    customer = sample_shop_orders.SAMPLE_CUSTOMER if sample else None
    token = (
        customers.demo_customer_token(sub=customer.id, name=customer.name, email=customer.email)
        if customer is not None
        else ""
    )
    return render(request, "chat/demo.html", {"sample_customer": customer, "customer_token": token})


@require_GET
def widget_config(request, site_key: str):
    """What the embedded widget needs to draw itself, for pages the site allows.

    Cross-origin fetches always carry Origin; the answer names that origin in CORS only when
    the site allows it. A request without Origin (not from a page) gets the public config.
    """
    origin = request.headers.get("Origin", "")
    site = selectors.site_by_key(site_key=site_key)
    if site is None:
        response = JsonResponse(
            {"error": "unknown_site", "message": "No active site has this key."}, status=404
        )
    elif origin and not site.allows(origin):
        response = JsonResponse(
            {
                "error": "origin_not_allowed",
                "message": f"{origin} is not among this site's allowed origins.",
            },
            status=403,
        )
    else:
        response = JsonResponse(_public_config(site))
        response["Cache-Control"] = "max-age=60"
    if origin:
        # Refusals are readable too, so the widget can stop instead of retrying a "network
        # error"; they contain nothing but the refusal.
        response["Access-Control-Allow-Origin"] = origin
    response["Vary"] = "Origin"
    return response


def _public_config(site) -> dict:
    return {
        "site_key": site.key,
        "name": site.name,
        "greeting": site.greeting,
        "accent_color": site.accent_color,
        "language": site.language,
        "business_hours": site.business_hours,
        "widget_js": _widget_js_url(),
    }


def _widget_js_url() -> str | None:
    """widget.js under its content-hashed name (cached for good), for embed.js to resolve
    against its own URL; None when it is not collected, and the loader takes the plain name."""
    try:
        return static("widget/widget.js")
    except ValueError as exc:  # not in the collectstatic manifest: a release step was missed
        logger.warning("widget config without widget_js: %s", exc)
        return None


@require_GET
async def healthz(request):
    """Liveness and readiness of what this process depends on, for probes and `make run`."""
    checks: dict[str, object] = {}
    try:
        await _database_ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check, reported
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        redis = get_redis()
        await redis.ping()
        checks["redis"] = "ok"
        checks["inference_workers"] = await pool.live_workers(redis)
    except RedisError as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}"
    healthy = checks["database"] == "ok" and checks["redis"] == "ok"
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", **checks}, status=200 if healthy else 503
    )


async def _database_ping() -> None:
    def ping() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    await db(ping)()
