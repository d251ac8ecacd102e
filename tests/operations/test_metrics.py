"""The product's metrics (chat/metrics.py) move when their events happen, through the real ASGI
router, Redis and a worker on the synthetic token source; and who may read /metrics
(cs_site/metrics_access.py)."""

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, Client

from chat import metrics
from chat.models import Message
from cs_site import metrics_access
from tests.console.helpers import console_socket, make_user, synced
from tests.waiting import poll, sample

pytestmark = pytest.mark.django_db(transaction=True)

ELSEWHERE = "203.0.113.9"  # a documentation address: not loopback, not allowed by default


def answers(outcome: str, reason: str) -> float:
    return sample("cs_chat_answers_total", outcome=outcome, reason=reason)


class Moves:
    """Samples before, for their change after."""

    def __init__(self, *series: tuple):
        self.series = series
        self.before = [sample(name, **labels) for name, labels in series]

    def deltas(self) -> list[float]:
        return [
            sample(name, **labels) - before
            for (name, labels), before in zip(self.series, self.before, strict=True)
        ]


FIRST_TOKEN = ("cs_chat_time_to_first_token_seconds_count", {})
FIRST_TOKEN_SUM = ("cs_chat_time_to_first_token_seconds_sum", {})
ANSWER_TIME = ("cs_chat_answer_seconds_count", {})
QUEUE_WAIT = ("cs_chat_queue_wait_seconds_count", {})
MODEL_STOP = ("cs_chat_answers_total", {"outcome": "model", "reason": "stop"})


# --- answers -----------------------------------------------------------------------------------


async def test_a_model_answer_counts_first_token_queue_wait_answer_time_and_outcome(
    connect, worker
):
    moves = Moves(FIRST_TOKEN, ANSWER_TIME, QUEUE_WAIT, MODEL_STOP)
    ttft_sum = sample(FIRST_TOKEN_SUM[0])
    tab, first = await connect()
    await tab.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
    done = (await tab.answer())[-1]
    assert done["fallback"] is False
    assert moves.deltas() == [1, 1, 1, 1]
    # The histogram holds the same span as the ttft stored with the answer.
    bot = await Message.objects.aget(pk=done["message_id"])
    assert sample(FIRST_TOKEN_SUM[0]) - ttft_sum == pytest.approx(bot.ttft_ms / 1000, abs=0.001)


async def test_a_fallback_counts_its_reason_and_no_first_token(connect):
    # No worker is running: the rule engine answers at once.
    moves = Moves(
        ("cs_chat_answers_total", {"outcome": "fallback", "reason": "unavailable"}),
        FIRST_TOKEN,
        QUEUE_WAIT,
        MODEL_STOP,
    )
    tab, _ = await connect()
    await tab.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
    assert (await tab.answer())[-1]["fallback"] is True
    assert moves.deltas() == [1, 0, 0, 0]


@pytest.fixture
def slow_engine(engine):
    engine.tokens_per_second = 40
    engine.reply = lambda prompt: " ".join(f"word{i}" for i in range(200))  # ~5 s
    return engine


async def test_an_answer_every_tab_left_counts_as_disconnected(
    connect, worker, slow_engine, settings
):
    settings.CHAT = {**settings.CHAT, "REJOIN_GRACE_SECONDS": 0.2}
    moves = Moves(
        ("cs_chat_answers_total", {"outcome": "disconnected", "reason": "disconnected"}),
        MODEL_STOP,
        ANSWER_TIME,
    )
    tab, _ = await connect()
    await tab.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await tab.receive_until(lambda f: f["type"] == "bot.delta")
    await tab.close()
    await poll(lambda: moves.deltas()[0] == 1, timeout=10)
    assert moves.deltas() == [1, 0, 0]  # once, and not as a model answer too


async def test_a_handoff_mid_answer_counts_the_handoff_and_the_answer_taken_over(
    connect, worker, slow_engine
):
    moves = Moves(
        ("cs_chat_handoffs_total", {"agents": "unavailable"}),
        ("cs_chat_answers_total", {"outcome": "taken_over", "reason": "handoff"}),
        MODEL_STOP,
    )
    tab, _ = await connect()
    await tab.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await tab.receive_until(lambda f: f["type"] == "bot.delta")
    await tab.send({"type": "handoff.request"})
    done = await tab.receive_until(lambda f: f["type"] == "bot.done")
    assert done[-1]["finish_reason"] == "handoff"
    # Nobody is online in tests: the hand-off is counted as one without agents.
    await poll(lambda: moves.deltas() == [1, 1, 0])
    # Asking again is the same hand-off, not a new one.
    await tab.send({"type": "handoff.request"})
    await tab.receive_until(lambda f: f["type"] == "handoff.ack")
    assert moves.deltas() == [1, 1, 0]


async def test_thumbs_and_csat_count_by_rating_and_score(connect, worker):
    moves = Moves(
        ("cs_chat_feedback_total", {"rating": "up"}),
        ("cs_chat_feedback_total", {"rating": "down"}),
        ("cs_chat_csat_total", {"score": "4"}),
    )
    tab, _ = await connect()
    await tab.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
    done = (await tab.answer())[-1]
    await tab.send({"type": "feedback", "message_id": done["message_id"], "rating": "up"})
    await tab.receive_until(lambda f: f["type"] == "feedback.ack")
    await tab.send({"type": "feedback", "message_id": done["message_id"], "rating": "down"})
    await tab.receive_until(lambda f: f["type"] == "feedback.ack")
    await tab.send({"type": "csat", "score": 4})
    await tab.receive_until(lambda f: f["type"] == "csat.ack")
    assert moves.deltas() == [1, 1, 1]


def test_label_values_stay_bounded():
    before = answers("cancelled", "other")
    metrics.answer_stopped("something new")
    assert answers("cancelled", "other") == before + 1
    metrics.feedback("<script>")
    metrics.csat(42)
    text = Client().get("/metrics").content.decode()
    assert "<script>" not in text and 'score="42"' not in text


# --- sockets -----------------------------------------------------------------------------------


async def test_open_customer_and_console_sockets_are_gauges(connect, django_user_model):
    def open_sockets(kind):
        return sample("cs_sockets_open", kind=kind)

    customers, consoles = open_sockets("customer"), open_sockets("console")
    tab, _ = await connect()
    assert open_sockets("customer") == customers + 1
    ann = await database_sync_to_async(make_user)(django_user_model, "ann")
    console = await console_socket(ann)
    await synced(console)
    assert open_sockets("console") == consoles + 1
    # A socket refused for not being staff was never a console.
    bob = await database_sync_to_async(make_user)(django_user_model, "bob", staff=False)
    refused = await console_socket(bob)
    await refused.receive_output()
    assert open_sockets("console") == consoles + 1

    await tab.close()
    await console.disconnect()
    await refused.disconnect()
    assert (open_sockets("customer"), open_sockets("console")) == (customers, consoles)


# --- who may read /metrics ---------------------------------------------------------------------


def test_loopback_reads_metrics_by_default():
    response = Client().get("/metrics")  # REMOTE_ADDR 127.0.0.1
    assert response.status_code == 200
    assert b"cs_chat_answers_total" in response.content
    assert b"django_http_requests" in response.content


def test_another_address_is_refused_with_a_short_text():
    response = Client().get("/metrics", REMOTE_ADDR=ELSEWHERE)
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == metrics_access.REFUSAL


def test_the_bearer_token_is_accepted_from_anywhere(settings):
    settings.METRICS_BEARER_TOKEN = "s3cret-token"
    client = Client()
    assert (
        client.get(
            "/metrics", REMOTE_ADDR=ELSEWHERE, headers={"Authorization": "Bearer s3cret-token"}
        ).status_code
        == 200
    )
    for wrong in ("Bearer s3cret", "Bearer ", "Basic s3cret-token", "s3cret-token"):
        assert (
            client.get(
                "/metrics", REMOTE_ADDR=ELSEWHERE, headers={"Authorization": wrong}
            ).status_code
            == 403
        )
    settings.METRICS_BEARER_TOKEN = ""  # no token configured: none is accepted, even empty
    assert (
        client.get(
            "/metrics", REMOTE_ADDR=ELSEWHERE, headers={"Authorization": "Bearer "}
        ).status_code
        == 403
    )


def test_a_staff_session_is_accepted_and_other_users_are_not(django_user_model):
    staff, client = make_user(django_user_model, "ann"), Client()
    client.force_login(make_user(django_user_model, "bob", staff=False))
    assert client.get("/metrics", REMOTE_ADDR=ELSEWHERE).status_code == 403
    client.force_login(staff)
    assert client.get("/metrics", REMOTE_ADDR=ELSEWHERE).status_code == 200


def test_allowed_networks_and_the_client_address_behind_trusted_proxies(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics").status_code == 403  # loopback is no longer listed
    # Through a trusted proxy, the address it vouches for counts, not the proxy's own.
    settings.TRUSTED_PROXIES = ["192.0.2.7"]
    via_proxy = {"REMOTE_ADDR": "192.0.2.7"}
    assert (
        client.get("/metrics", **via_proxy, headers={"X-Forwarded-For": "10.9.9.9"}).status_code
        == 200
    )
    assert (
        client.get("/metrics", **via_proxy, headers={"X-Forwarded-For": ELSEWHERE}).status_code
        == 403
    )


def test_a_forwarded_request_through_an_unknown_proxy_is_not_let_in_as_its_peer(settings):
    # A proxy on the same machine that TRUSTED_PROXIES does not name: every visitor would
    # arrive from loopback. The header shows the request was forwarded.
    settings.TRUSTED_PROXIES = []
    assert Client().get("/metrics", headers={"X-Forwarded-For": ELSEWHERE}).status_code == 403
    assert Client().get("/metrics", headers={"Forwarded": "for=1.2.3.4"}).status_code == 403


class PeerClient(AsyncClient):
    """Requests through the ASGI handler, as Daphne makes them, from `peer`."""

    def __init__(self, peer: str):
        super().__init__()
        self.peer = peer

    def _base_scope(self, **request):
        return {**super()._base_scope(**request), "client": [self.peer, 50000]}


async def test_through_asgi_the_peer_is_the_scope_client():
    assert (await PeerClient("127.0.0.1").get("/metrics")).status_code == 200
    assert (await PeerClient("::1").get("/metrics")).status_code == 200
    assert (await PeerClient(ELSEWHERE).get("/metrics")).status_code == 403


def test_a_typo_in_the_allowed_networks_names_the_entry(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8", "10.0.0.0/33"]
    with pytest.raises(ImproperlyConfigured, match="10.0.0.0/33"):
        metrics_access._networks(tuple(settings.METRICS_ALLOWED_NETWORKS))


async def test_metrics_page_is_served_through_the_asgi_stack_to_a_staff_user(django_user_model):
    ann = await database_sync_to_async(make_user)(django_user_model, "ann")
    client = PeerClient(ELSEWHERE)
    await client.aforce_login(ann)
    assert (await client.get("/metrics")).status_code == 200
