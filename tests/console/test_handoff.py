"""Hand-off both ways through the customer socket and the staff services: takeover races,
takeover mid-answer, agent replies, hand-back, closing, internal notes kept from customers."""

import datetime as dt
import functools
import sys
import threading

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection, connections

from agents import services
from agents.models import Ticket
from chat import hours
from chat import services as chat_services
from chat.models import Conversation, Message
from tests.conftest import stored_conversation
from tests.waiting import poll

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def agents():
    User = get_user_model()
    ada = await User.objects.acreate(username="ada", first_name="Ada", is_staff=True)
    bob = await User.objects.acreate(username="bob", first_name="Bob", is_staff=True)
    return ada, bob


takeover = database_sync_to_async(services.takeover)
reply = database_sync_to_async(services.reply)
hand_back = database_sync_to_async(services.hand_back)


def race(*calls):
    """Each call on a thread of its own, with its own database connection, all released at
    once: the outcome of each (its result or its exception), in order. Unlike two
    database_sync_to_async calls, which run one after the other on one thread, these can
    interleave, so a check-then-write that is not atomic lets both through."""
    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(index, call):
        try:
            # Connected first: the race is between the calls, not the connections' setup.
            connection.ensure_connection()
            barrier.wait(timeout=10)
            outcomes[index] = call()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    # Threads take turns at every chance, not every 5 ms: one call rarely runs to its end alone.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(interval)
    return outcomes


def test_two_agents_taking_over_at_once_exactly_one_wins(django_user_model):
    ada = django_user_model.objects.create(username="ada", first_name="Ada", is_staff=True)
    bob = django_user_model.objects.create(username="bob", first_name="Bob", is_staff=True)
    # Many rounds: one pair of threads may happen not to overlap; 20 in a row hardly do (a
    # takeover that reads, then writes, let both agents in within a few rounds when tried).
    for _ in range(20):
        conversation = Conversation.objects.create(token_hash="0" * 64)
        results = race(
            *(
                functools.partial(services.takeover, conversation_id=conversation.pk, agent=agent)
                for agent in (ada, bob)
            )
        )
        winners = [r for r in results if isinstance(r, Conversation)]
        losers = [r for r in results if isinstance(r, services.NotAllowed)]
        assert len(winners) == 1 and len(losers) == 1, results
        conversation.refresh_from_db()
        holder = conversation.assigned_agent
        assert conversation.status == Conversation.Status.HUMAN
        assert holder == winners[0].assigned_agent
        assert "already holds" in str(losers[0]) and holder.first_name in str(losers[0])
        assert conversation.messages.filter(role="system").count() == 1  # one "joined" line


@pytest.fixture
def slow_engine(engine):
    engine.tokens_per_second = 20
    engine.reply = lambda prompt: "word " * 40
    return engine


async def test_takeover_mid_answer_stops_it_and_the_bot_stays_silent(
    connect, slow_engine, worker, agents
):
    client, first = await connect()
    await client.send({"type": "message", "text": "tell me everything", "client_id": "1"})
    await client.receive()
    await client.receive_until(lambda f: f["type"] == "bot.delta")
    await takeover(conversation_id=first["id"], agent=agents[0])
    # The answer's run and the customer's socket both hear the takeover: the partial answer
    # ends and the agent joins, in either order.
    seen = set()
    frames = await client.receive_until(
        lambda f: seen.add(f["type"]) or {"bot.done", "agent.joined"} <= seen
    )
    done = next(f for f in frames if f["type"] == "bot.done")
    assert done["partial"] is True and done["finish_reason"] == "takeover"
    assert {"type": "agent.joined", "agent_name": "Ada"} in frames
    await poll(lambda: slow_engine.aborted, timeout=2)
    assert slow_engine.aborted and slow_engine.running_requests() == 0
    bot = await Message.objects.aget(conversation_id=first["id"], role="bot")
    assert bot.is_partial and 0 < len(bot.text) < len("word " * 40)

    # While the human holds it, a customer message is stored and no bot request goes out.
    prompts = len(slow_engine.prompts)
    await client.send({"type": "message", "text": "hello?", "client_id": "2"})
    assert (await client.receive())["type"] == "message.ack"
    assert await client.nothing_more(0.5)
    assert len(slow_engine.prompts) == prompts
    assert await Message.objects.filter(conversation_id=first["id"], role="bot").acount() == 1


async def test_no_bot_message_is_created_once_a_human_holds_the_conversation(agents):
    conversation, _ = await database_sync_to_async(chat_services.conversation_start)()
    await takeover(conversation_id=conversation.pk, agent=agents[0])
    with pytest.raises(chat_services.BotSilenced):
        await database_sync_to_async(chat_services.bot_message_start)(
            conversation=conversation, model_name="m"
        )
    with pytest.raises(chat_services.BotSilenced):
        await database_sync_to_async(chat_services.bot_message_fallback)(
            conversation=conversation, text="sorry", reason="timeout"
        )
    assert await Message.objects.filter(role="bot").acount() == 0


async def test_agent_replies_then_hands_back_and_the_bot_answers_with_it_in_context(
    connect, worker, engine, agents
):
    ada, bob = agents
    client, first = await connect()
    await stored_conversation(first)  # agents act on conversations the console shows
    await takeover(conversation_id=first["id"], agent=ada)
    assert (await client.receive())["type"] == "agent.joined"
    with pytest.raises(services.NotAllowed):
        await reply(conversation_id=first["id"], agent=bob, text="I am not holding it")
    message = await reply(conversation_id=first["id"], agent=ada, text="Your refund code is R-77.")
    assert await client.receive() == {
        "type": "agent.message",
        "id": message.pk,
        "text": "Your refund code is R-77.",
        "agent_name": "Ada",
    }
    with pytest.raises(services.NotAllowed):
        await hand_back(conversation_id=first["id"], agent=bob)
    await hand_back(conversation_id=first["id"], agent=ada)
    assert await client.receive() == {"type": "agent.left"}
    await client.send({"type": "message", "text": "What was my code again?", "client_id": "q"})
    await client.receive()
    await client.answer()
    prompt = list(engine.prompts.values())[-1]
    assert "Your refund code is R-77." in prompt  # the agent's turn is context for the bot

    # Resume shows the agent's name in history.
    again, _ = await connect(f"conversation={first['id']}&token={first['token']}")
    history = await again.receive()
    agent_items = [m for m in history["messages"] if m["role"] == "agent"]
    assert [(m["text"], m["agent_name"]) for m in agent_items] == [
        ("Your refund code is R-77.", "Ada")
    ]


async def test_asking_for_a_human_in_words_moves_to_waiting_and_opens_a_ticket(
    connect, worker, engine
):
    engine.reply = lambda prompt: "很抱歉听到这个消息，请提供您的订单号。"
    client, first = await connect("lang=zh-CN")
    await client.send({"type": "message", "text": "我的快递丢了", "client_id": "1"})
    await client.receive()
    await client.answer()
    await client.send({"type": "message", "text": "转人工", "client_id": "2"})
    assert (await client.receive())["type"] == "message.ack"
    ack = await client.receive()
    assert ack["type"] == "handoff.ack" and ack["ask_contact"] is True
    assert len(engine.prompts) == 1  # no bot answer to "转人工"
    conversation = await Conversation.objects.aget(pk=first["id"])
    assert conversation.status == "waiting"
    ticket = await Ticket.objects.aget(conversation=conversation)
    assert ticket.subject == "我的快递丢了" and ticket.status == "open"

    await client.send({"type": "contact", "email": "kim@example.com", "name": "Kim"})
    assert await client.receive() == {"type": "contact.ack"}
    await conversation.arefresh_from_db()
    assert (conversation.customer_email, conversation.customer_name) == ("kim@example.com", "Kim")
    await client.send({"type": "contact", "email": "not-an-email"})
    assert (await client.receive())["code"] == "bad_frame"


async def test_yes_to_the_bots_offer_of_a_human_hands_off(connect, worker, engine):
    engine.reply = lambda prompt: "I'm not sure. Shall I connect you with a human agent?"
    client, first = await connect()
    await client.send({"type": "message", "text": "weird problem", "client_id": "1"})
    await client.receive()
    await client.answer()
    await client.send({"type": "message", "text": "Yes please", "client_id": "2"})
    await client.receive()
    assert (await client.receive())["type"] == "handoff.ack"
    assert (await Conversation.objects.aget(pk=first["id"])).status == "waiting"


async def test_agent_closing_tells_the_customer(connect, agents):
    client, first = await connect()
    await stored_conversation(first)  # agents act on conversations the console shows
    await database_sync_to_async(services.close)(conversation_id=first["id"], agent=agents[0])
    assert await client.receive() == {"type": "conversation.closed"}
    with pytest.raises(services.NotAllowed):
        await takeover(conversation_id=first["id"], agent=agents[0])


async def test_internal_notes_never_reach_the_customer_or_the_prompt(
    connect, worker, engine, agents
):
    client, first = await connect()
    await stored_conversation(first)  # agents act on conversations the console shows
    ticket = await database_sync_to_async(services.ticket_create)(
        subject="VIP", actor=agents[0], conversation_id=first["id"]
    )
    await database_sync_to_async(services.note_add)(
        ticket_id=ticket.pk, author=agents[0], text="SECRET-NOTE: customer is a reseller"
    )
    assert await client.nothing_more(0.3)
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "1"})
    frames = [await client.receive(), *await client.answer()]
    assert all("SECRET-NOTE" not in str(frame) for frame in frames)
    assert all("SECRET-NOTE" not in prompt for prompt in engine.prompts.values())
    again, _ = await connect(f"conversation={first['id']}&token={first['token']}")
    assert "SECRET-NOTE" not in str(await again.receive())


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        ("2026-11-23 09:00", True),  # Monday 10:00 in Berlin
        ("2026-11-23 17:30", False),  # Monday 18:30 in Berlin
        ("2026-11-28 10:00", True),  # Saturday 11:00
        ("2026-11-29 10:00", False),  # Sunday: not listed
    ],
)
def test_business_hours(when, open_):
    business = {"timezone": "Europe/Berlin", "mon-fri": "09:00-18:00", "sat": "10:00-14:00"}
    now = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
    assert hours.is_open(business, now) is open_
    assert hours.is_open({}, now) is True
