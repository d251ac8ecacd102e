"""SAMPLE DATA: the sample shop's orders. Nothing here is a real customer or order.

The orders are fixed; their dates follow today's (an order shipped two days ago is still on
its way), so the demo reads the same whatever the day. What customers change (cancelling an
order still being prepared) is kept in Redis, shared by every process of the desk, for a
week: the sample resets itself, and a Redis started afresh starts it afresh.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from runtime.redis_client import get_redis

PROCESSING, SHIPPED, DELIVERED, CANCELLED = "processing", "shipped", "delivered", "cancelled"
CANCELLED_KEY = "sample_shop:cancelled"
STATE_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Order:
    id: str
    customer_id: str
    email: str
    items: tuple[str, ...]
    total: str
    status: str
    placed_days_ago: int
    carrier: str = ""
    tracking_number: str = ""
    shipped_days_ago: int | None = None
    eta_in_days: int | None = None
    delivered_days_ago: int | None = None


ORDERS = {
    order.id: order
    for order in (
        Order(
            id="A1001",
            customer_id="c-1001",
            email="ada@example.com",
            items=("Oak desk lamp", "LED bulb E27 (2 pack)"),
            total="€64.90",
            status=SHIPPED,
            placed_days_ago=3,
            carrier="PostNL",
            tracking_number="3SACP1001NL",
            shipped_days_ago=2,
            eta_in_days=1,
        ),
        Order(
            id="A1002",
            customer_id="c-1001",
            email="ada@example.com",
            items=("Linen duvet cover, 200×220",),
            total="€89.00",
            status=PROCESSING,
            placed_days_ago=0,
        ),
        Order(
            id="A1003",
            customer_id="c-1002",
            email="ben@example.com",
            items=("Bluetooth speaker", "USB-C charger 30 W"),
            total="€119.80",
            status=DELIVERED,
            placed_days_ago=12,
            carrier="DHL",
            tracking_number="JD014600001003",
            shipped_days_ago=11,
            delivered_days_ago=9,
        ),
        Order(
            id="A1004",
            customer_id="c-1002",
            email="ben@example.com",
            items=("Blackout curtains, 2 panels",),
            total="€45.50",
            status=CANCELLED,
            placed_days_ago=20,
        ),
        Order(
            id="A1005",
            customer_id="c-1003",
            email="chen@example.com",
            items=("Electric toothbrush", "In-ear headphones"),
            total="€74.85",
            status=SHIPPED,
            placed_days_ago=5,
            carrier="UPS",
            tracking_number="1Z999AA10123451005",
            shipped_days_ago=4,
            eta_in_days=2,
        ),
        Order(
            id="A1006",
            customer_id="c-1003",
            email="chen@example.com",
            items=("Wool throw blanket",),
            total="€39.95",
            status=PROCESSING,
            placed_days_ago=1,
        ),
    )
}


@dataclass(frozen=True)
class SampleCustomer:
    id: str
    name: str
    email: str
    orders: tuple[str, ...]


# Whom the demo page's visitor chats as (chat.views.demo): the customer of A1001 (shipped) and
# A1002 (still being prepared, so it can be cancelled).
SAMPLE_CUSTOMER = SampleCustomer(
    id="c-1001", name="Ada (sample customer)", email="ada@example.com", orders=("A1001", "A1002")
)


def find(order_id: str) -> Order | None:
    return ORDERS.get(order_id.strip().upper())


def latest_of(customer_id: str) -> Order | None:
    """The customer's most recently placed order."""
    own = [order for order in ORDERS.values() if order.customer_id == customer_id.strip()]
    return min(own, key=lambda order: order.placed_days_ago, default=None)


async def status_of(order: Order) -> str:
    if order.status == PROCESSING and await get_redis().hexists(CANCELLED_KEY, order.id):
        return CANCELLED
    return order.status


async def cancel(order: Order) -> bool:
    """Cancel an order still being prepared: True when this request cancelled it, False when
    it had shipped, was delivered or was cancelled already (HSETNX: one of two racing
    requests wins)."""
    if order.status != PROCESSING:
        return False
    redis = get_redis()
    cancelled = bool(
        await redis.hsetnx(CANCELLED_KEY, order.id, dt.datetime.now(dt.UTC).isoformat())
    )
    await redis.expire(CANCELLED_KEY, STATE_TTL_SECONDS)
    return cancelled


def described(order: Order, status: str, *, today: dt.date | None = None) -> dict:
    """The order as the API answers it: no e-mail address or customer id (the caller has
    them), dates as ISO dates, and a sentence for people (`status_text`, and in Chinese
    `status_text_zh`, for the sample actions' Chinese results)."""
    today = today or dt.date.today()

    def day(days_ago: int) -> str:
        return (today - dt.timedelta(days=days_ago)).isoformat()

    body: dict = {
        "order_id": order.id,
        "status": status,
        "placed_on": day(order.placed_days_ago),
        "items": list(order.items),
        "total": order.total,
    }
    if status == SHIPPED:
        eta = (today + dt.timedelta(days=order.eta_in_days or 0)).isoformat()
        body |= {
            "carrier": order.carrier,
            "tracking_number": order.tracking_number,
            "shipped_on": day(order.shipped_days_ago or 0),
            "eta": eta,
        }
        text = (
            f"shipped with {order.carrier} on {body['shipped_on']}, expected on {eta} "
            f"(tracking number {order.tracking_number})"
        )
        text_zh = (
            f"已于 {body['shipped_on']} 由 {order.carrier} 发货，预计 {eta} 送达"
            f"（运单号 {order.tracking_number}）"
        )
    elif status == DELIVERED:
        body |= {
            "carrier": order.carrier,
            "delivered_on": day(order.delivered_days_ago or 0),
        }
        text = f"delivered on {body['delivered_on']}"
        text_zh = f"已于 {body['delivered_on']} 送达"
    elif status == CANCELLED:
        text = (
            "cancelled; any payment is refunded to the original payment method within 5 "
            "business days"
        )
        text_zh = "已取消；款项将在 5 个工作日内退回原支付方式"
    else:
        text = "being prepared in our warehouse; it has not shipped yet and can still be cancelled"
        text_zh = "正在仓库备货，尚未发货，仍可取消"
    body["status_text"] = text
    body["status_text_zh"] = text_zh
    return body
