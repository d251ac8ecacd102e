"""The desk's product metrics, defined once: what customers and agents live through.

Served by each web process at /metrics (django-prometheus, guarded by cs_site/metrics_access.py)
beside django_* request metrics and chat.limits' cs_chat_limited_total. The worker's own
cs_worker_* and vLLM's vllm:* series are on the worker's metrics port (inference_worker/metrics.py).
deploy/grafana/dashboards/desk.json charts them; docs/operations.md ("Monitoring") lists them.

Labels take only the few values named here: a conversation, key or user id as a label would make
one series per customer and grow Prometheus without bound. Every label value is created at import
with a zero, so a panel shows 0 rather than "no data" before the first event, and rate() sees the
first event as an increase instead of as a series that appeared already at 1.
"""

from __future__ import annotations

import weakref

from prometheus_client import Counter, Gauge, Histogram

from chat import fallback, guards
from chat.actions import outcome as action_outcome

# --- answers -------------------------------------------------------------------------------

# Seconds, from a fraction of a second (a warm GPU) to the first-token deadline (30 s).
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30)

FIRST_TOKEN = Histogram(
    "cs_chat_time_to_first_token_seconds",
    # The span stored as the bot message's ttft_ms: the request sent (just after the question
    # was stored and its prompt built) to the first delta sent to the customer. Unlike the
    # worker's and vLLM's figures, it includes the wait in the queue and the hop through Redis.
    "From a question's request sent to its first token sent to the customer",
    buckets=_LATENCY_BUCKETS,
)
ANSWER_SECONDS = Histogram(
    "cs_chat_answer_seconds",
    "Model answers: from the request sent to the whole answer sent (stored as total_ms)",
    buckets=(0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180),
)
QUEUE_WAIT = Histogram(
    "cs_chat_queue_wait_seconds",
    # One clock (this process's), unlike cs_worker_queue_wait_seconds, which compares the web
    # machine's clock with the worker's. Answers that never start (fallback) are not observed.
    "From a request sent to the workers to its inference.start",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

# How an answer ended, once per answer, with the reasons each outcome can have. A reason not
# listed counts as "other" (labels stay bounded whatever a caller passes).
MODEL, FALLBACK, GUARDED, DISCONNECTED, TAKEN_OVER, CANCELLED = (
    "model",
    "fallback",
    "guarded",
    "disconnected",
    "taken_over",
    "cancelled",
)
OTHER = "other"
OUTCOMES: dict[str, tuple[str, ...]] = {
    # The model's answer reached its end; the reason is vLLM's finish reason.
    MODEL: ("stop", "length", "repetition", OTHER),
    # The product answered in its own words, without the model (chat/guards.py), or with the
    # help centre's own statements instead of the model's answer ("quoted").
    GUARDED: (
        "not_covered",
        "greeting",
        "ask_details",
        "quoted",
        "confirm",
        "action_failed",
        "sign_in",
        OTHER,
    ),
    # The rule engine answered instead (chat/fallback.py), partial model text kept if any.
    FALLBACK: (
        fallback.REASON_UNAVAILABLE,
        fallback.REASON_TIMEOUT,
        fallback.REASON_ERROR,
        fallback.REASON_BUSY,
        fallback.REASON_WORKER_LOST,
        OTHER,
    ),
    # Every customer socket left and none came back within the rejoin grace.
    DISCONNECTED: ("disconnected",),
    # A human holds the conversation: an agent took it, the customer asked for one, or a
    # takeover came between the request and its first token ("silenced").
    TAKEN_OVER: ("takeover", "handoff", "silenced"),
    # The conversation was closed, or this process stopped mid-answer.
    CANCELLED: ("closed", "shutdown", OTHER),
}
ANSWERS = Counter(
    "cs_chat_answers_total",
    "Answers to customers' questions, by how they ended",
    ["outcome", "reason"],
)
# What AnswerRun._stop's reasons mean as outcomes.
_STOPPED = {
    "disconnected": DISCONNECTED,
    "takeover": TAKEN_OVER,
    "handoff": TAKEN_OVER,
    "closed": CANCELLED,
}


def answer_ended(outcome: str, reason: str) -> None:
    reasons = OUTCOMES[outcome]
    ANSWERS.labels(outcome=outcome, reason=reason if reason in reasons else OTHER).inc()


def answer_stopped(reason: str) -> None:
    """An answer stopped before its end (AnswerRun._stop's reason)."""
    answer_ended(_STOPPED.get(reason, CANCELLED), reason)


# Every decision of the product's guards (chat/guards.py), on any answer: a guard that only
# added words counts here and the answer still counts as the model's above.
GUARDS = Counter(
    "cs_chat_guards_total", "Answers a product guard shaped (chat/guards.py), by guard", ["guard"]
)


def guarded(guard: str) -> None:
    GUARDS.labels(guard=guard if guard in guards.ALL else OTHER).inc()


def model_answered(finish_reason: str | None, seconds: float) -> None:
    answer_ended(MODEL, finish_reason or "stop")
    ANSWER_SECONDS.observe(seconds)


# --- people --------------------------------------------------------------------------------

HANDOFFS = Counter(
    "cs_chat_handoffs_total",
    # Counted when the bot hands over or a first request is recorded, not for every click.
    "Customers' requests for a human, by whether an agent was online within business hours",
    ["agents"],
)
AGENTS_AVAILABLE, AGENTS_UNAVAILABLE = "available", "unavailable"


def handoff(*, agents_available: bool) -> None:
    HANDOFFS.labels(agents=AGENTS_AVAILABLE if agents_available else AGENTS_UNAVAILABLE).inc()


FEEDBACK = Counter(
    "cs_chat_feedback_total", "Thumbs on bot answers (rating again counts again)", ["rating"]
)
RATINGS = ("up", "down")
CSAT = Counter("cs_chat_csat_total", "Satisfaction scores given to conversations", ["score"])
SCORES = ("1", "2", "3", "4", "5")


def feedback(rating: str) -> None:
    FEEDBACK.labels(rating=rating if rating in RATINGS else OTHER).inc()


def csat(score: int) -> None:
    CSAT.labels(score=str(score) if str(score) in SCORES else OTHER).inc()


# --- actions (chat/actions/) ----------------------------------------------------------------

# By action name: names are the company's configuration, a few dozen at most, never a
# customer's value. An action's series appear with its first call.
ACTION_CALLS = Counter(
    "cs_chat_action_calls_total",
    "Calls of actions to the company's back end, by action and outcome (refused: not sent)",
    ["action", "outcome"],
)
ACTION_SECONDS = Histogram(
    "cs_chat_action_call_seconds",
    "Action calls sent to the back end: from the request to the whole answer read",
    ["action"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30),
)


def action_called(action: str, outcome: str, seconds: float | None) -> None:
    """One call of `action` ended as `outcome`; `seconds` for a call that was sent."""
    known = outcome if outcome in action_outcome.STATUSES else OTHER
    ACTION_CALLS.labels(action=action, outcome=known).inc()
    if seconds is not None:
        ACTION_SECONDS.labels(action=action).observe(seconds)


# --- sockets -------------------------------------------------------------------------------

CUSTOMER, CONSOLE = "customer", "console"
SOCKETS = Gauge("cs_sockets_open", "WebSockets open in this process", ["kind"])
# The open sockets themselves, held weakly: the gauge reads their number when scraped. A
# socket whose disconnect never ran (its consumer failed) leaves the count when it is
# collected, instead of staying counted until the process restarts.
_open: dict[str, weakref.WeakSet] = {CUSTOMER: weakref.WeakSet(), CONSOLE: weakref.WeakSet()}


def socket_opened(kind: str, consumer) -> None:
    _open[kind].add(consumer)


def socket_closed(kind: str, consumer) -> None:
    _open[kind].discard(consumer)  # once or many times: disconnect may come after a refusal


# --- every series from the start -----------------------------------------------------------

for _outcome, _reasons in OUTCOMES.items():
    for _reason in _reasons:
        ANSWERS.labels(outcome=_outcome, reason=_reason)
for _guard in (*guards.ALL, OTHER):
    GUARDS.labels(guard=_guard)
for _agents in (AGENTS_AVAILABLE, AGENTS_UNAVAILABLE):
    HANDOFFS.labels(agents=_agents)
for _rating in RATINGS:
    FEEDBACK.labels(rating=_rating)
for _score in SCORES:
    CSAT.labels(score=_score)
for _kind, _sockets in _open.items():
    SOCKETS.labels(kind=_kind).set_function(_sockets.__len__)
