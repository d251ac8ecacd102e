"""Prometheus metrics of the delivery process (served on WEBHOOKS["METRICS_PORT"])."""

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "cs_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, retry (will try again), dead (gave up).",
    ["outcome"],
)
LATENCY = Histogram(
    "cs_webhook_delivery_seconds",
    "Time from sending a webhook to the receiver's answer (or the failure).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("cs_webhook_queue_depth", "Webhook deliveries pending (due or waiting).")
QUEUE_AGE = Gauge(
    "cs_webhook_queue_oldest_seconds", "Age of the oldest pending webhook delivery (0: none)."
)
