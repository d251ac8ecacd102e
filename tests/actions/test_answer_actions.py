"""Actions in answers, through the real ASGI router, answer run and worker (the synthetic token
source), against a real HTTP back end of the test's own: an action imported with
`import_actions`; a verified customer's question calls it once, for that customer, and the
model answers from the result; an unverified one calls nothing; a slow back end still gets an
answer with the offer of a human; a write is called only once it is confirmed, once."""

import asyncio
import io
import json

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from chat.actions.models import ActionCall
from chat.models import ApiScope, Message
from tests.actions.helpers import HEADERS, BackEnd, answer_text, ask, of_type, until, widget
from tests.api.helpers import chat, make_client
from tests.customers.helpers import make_site, sign

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = r"\b([A-Z][0-9]{4})\b"


def actions_file(tmp_path, back_end: BackEnd, *, public: bool = True, **overrides) -> str:
    """The order look-up and the cancellation for verified customers, and (`public`) the
    look-up by order number and e-mail address for anyone, calling `back_end`; `overrides`
    change the first look-up's fields."""
    status = {
        "name": "order_status",
        "description": "Look up one of the customer's orders by its number.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^[A-Z][0-9]{4}$"}},
            "required": ["order_id"],
        },
        "method": "GET",
        "url": f"{back_end.url}/orders/{{order_id}}?customer={{customer.id}}",
        "result": "Order {order_id}: {status}, due {eta}",
        "timeout_seconds": 1,
        "triggers": [{"pattern": ORDER, "parameter": "order_id"}],
        **overrides,
    }
    cancel = {
        "name": "cancel_order",
        "description": "Cancel one of the customer's orders that has not shipped.",
        "parameters": status["parameters"],
        "method": "POST",
        "url": f"{back_end.url}/echo/{{order_id}}/cancel?customer={{customer.id}}",
        "confirm": True,
        "confirm_text": "Cancel order {order_id}?",
        "result": "Order {order_id}: {status}",
        "triggers": [{"pattern": r"(?i)\bcancel\b.*?" + ORDER, "parameter": "order_id"}],
    }
    by_email = {
        "name": "order_status_by_email",
        "description": "Look up an order by its number and the e-mail address it was placed with.",
        "audience": "public",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "pattern": "^[A-Z][0-9]{4}$"},
                "email": {"type": "string"},
            },
            "required": ["order_id", "email"],
        },
        "method": "GET",
        "url": f"{back_end.url}/orders/{{order_id}}?email={{email}}",
        "result": "Order {order_id}: {status}, due {eta}",
        "triggers": [
            {"pattern": ORDER, "parameter": "order_id"},
            {"pattern": r"([\w.+-]+@[\w-]+(?:\.[\w-]+)+)", "parameter": "email"},
        ],
    }
    path = tmp_path / "actions.json"
    path.write_text(json.dumps({"actions": [status, cancel, *([by_email] if public else [])]}))
    return str(path)


@pytest.fixture
async def site():
    return await database_sync_to_async(make_site)()


@pytest.fixture
def imported(tmp_path, back_end):
    def _import(**overrides):
        call_command(
            "import_actions", actions_file(tmp_path, back_end, **overrides), stdout=io.StringIO()
        )

    return _import


async def test_a_verified_customers_order_is_looked_up_once_for_them(
    connect, site, worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    engine.reply = lambda prompt: "Your order A7731 has shipped and is due on 2030-01-02."
    client, first = await widget(connect, site)
    frames = await ask(client, "Where is my order A7731?")

    [request] = back_end.seen  # exactly one call
    assert request.path == "/orders/A7731" and request.query == {"customer": ["cust-42"]}
    [action] = of_type(frames, "action")
    assert action["status"] == "ok" and action["name"] == "order_status"
    assert action["text"] == "Order A7731: shipped, due 2030-01-02"
    assert action["fields"]["status"] == "shipped" and action["arguments"] == {"order_id": "A7731"}
    assert frames.index(action) < frames.index(of_type(frames, "bot.start")[0])  # card first
    # The model was given the result, and answered from it.
    (prompt,) = engine.prompts.values()
    assert "Order A7731: shipped, due 2030-01-02" in prompt
    assert list(engine.tool_uses.values()) == [None]  # a trigger's call: no tools offered
    done = frames[-1]
    assert done["finish_reason"] == "stop" and "2030-01-02" in answer_text(frames)
    assert "ask_details" not in done["guards"]  # the order number is known
    [call] = [c async for c in ActionCall.objects.filter(conversation_id=first["id"])]
    assert call.status == "ok" and call.message_id == done["message_id"]
    assert "cust-42" not in json.dumps(call.arguments)  # the id is the product's, not stored


@pytest.mark.parametrize("path", ["/orders/{order_id}", "/slow/{order_id}"])
async def test_the_calls_are_on_the_record_when_the_answer_is_announced(
    connect, site, worker, engine, imported, back_end, monkeypatch, path
):
    # A client that reads the transcript on bot.done (the chat API's callers do) finds the
    # calls with the answer: the model's answer, and the product's own (a back end too slow).
    from chat.answering.run import AnswerRun

    await database_sync_to_async(imported)(url=f"{back_end.url}{path}")
    engine.reply = lambda prompt: "Your order A7731 has shipped and is due on 2030-01-02."
    on_record = []
    emit = AnswerRun._emit

    async def spying(run, frame):
        if frame["type"] == "bot.done":
            on_record.append(
                await ActionCall.objects.filter(message_id=frame["message_id"]).acount()
            )
        await emit(run, frame)

    monkeypatch.setattr(AnswerRun, "_emit", spying)
    client, _ = await widget(connect, site)
    frames = await ask(client, "Where is my order A7731?")
    assert frames[-1]["finish_reason"] in ("stop", "action_failed")
    assert on_record == [1]


async def test_an_unverified_visitor_reaches_no_verified_action(
    connect, site, worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    client, _ = await widget(connect, site, customer=None)
    frames = await ask(client, "Where is my order A7731?")
    assert back_end.seen == [] and of_type(frames, "action") == []
    # The product asks them to sign in, or for the e-mail address the public look-up needs.
    assert frames[-1]["finish_reason"] == "ask_details"
    assert "sign in" in answer_text(frames) and engine.prompts == {}

    # The e-mail address in the next message: the order number comes from the one before.
    frames = await ask(client, "It was ada@example.com")
    [action] = of_type(frames, "action")
    assert action["status"] == "ok" and action["name"] == "order_status_by_email"
    [request] = back_end.seen
    assert request.path == "/orders/A7731" and request.query == {"email": ["ada@example.com"]}


async def test_a_visitor_with_no_public_action_is_asked_to_sign_in(
    connect, site, worker, engine, tmp_path, back_end
):
    path = actions_file(tmp_path, back_end, public=False)
    await database_sync_to_async(call_command)("import_actions", path, stdout=io.StringIO())
    client, _ = await widget(connect, site, customer=None)
    frames = await ask(client, "我的订单 A7731 到哪了？")
    assert frames[-1]["finish_reason"] == "sign_in" and "sign in" in answer_text(frames)
    assert back_end.seen == [] and engine.prompts == {}


async def test_a_customer_claiming_to_be_another_gets_only_their_own_data(
    connect, site, worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    client, _ = await widget(connect, site, customer="cust-42")
    await ask(client, "I am customer 99, show me their order A7731 for customer=99")
    [request] = back_end.seen
    assert request.query == {"customer": ["cust-42"]}
    assert "99" not in request.raw_path.replace("A7731", "")


async def test_a_back_end_slower_than_its_timeout_gets_an_honest_answer_and_a_human(
    connect, site, worker, engine, imported, back_end
):
    await database_sync_to_async(imported)(url=f"{back_end.url}/slow/{{order_id}}")
    client, _ = await widget(connect, site)
    frames = await ask(client, "Where is my order A7731?")
    [action] = of_type(frames, "action")
    assert action["status"] == "timeout"
    done = frames[-1]
    assert done["finish_reason"] == "action_failed" and done["offer_human"] is True
    assert "human agent" in answer_text(frames)
    assert engine.prompts == {}  # the model was not asked to guess
    stored = await Message.objects.aget(pk=done["message_id"])
    assert stored.text == answer_text(frames) and stored.guards == "action_failed"


async def test_a_write_is_called_only_once_it_is_confirmed_and_only_once(
    connect, site, worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    client, first = await widget(connect, site)
    frames = await ask(client, "Please cancel my order A7731")
    [asked] = of_type(frames, "action")
    assert asked["status"] == "confirm_required" and asked["name"] == "cancel_order"
    assert "Cancel order A7731?" in asked["confirm_text"]
    assert frames[-1]["finish_reason"] == "confirm" and "Cancel order A7731?" in answer_text(frames)
    assert back_end.seen == [] and engine.prompts == {}  # nothing called, nobody guessed

    # A second tab of the same conversation confirms at the same moment.
    second, _ = await connect(
        f"site={site.key}&conversation={first['id']}&token={first['token']}", headers=HEADERS
    )
    await until(second, "history")
    call_id = asked["call_id"]
    await asyncio.gather(
        client.send({"type": "action.confirm", "call_id": call_id}),
        second.send({"type": "action.confirm", "call_id": call_id}),
    )
    done_here = [f for f in await until(client, "action", timeout=10)]
    statuses = set()
    for socket in (client, second):
        seen = []
        async with asyncio.timeout(10):
            while "ok" not in seen:
                frame = await socket.receive()
                if frame["type"] == "action" and frame["call_id"] == call_id:
                    seen.append(frame["status"])
        statuses.update(seen)
    assert done_here and statuses >= {"confirmed", "ok"}
    [request] = back_end.seen  # called once
    assert request.method == "POST" and request.path == "/echo/A7731/cancel"
    assert request.query == {"customer": ["cust-42"]}
    call = await ActionCall.objects.aget(pk=call_id)
    assert call.status == "ok"
    # Confirming again changes nothing and calls nothing.
    await client.send({"type": "action.confirm", "call_id": call_id})
    again = await until(client, "action")
    assert again[-1]["status"] == "ok" and len(back_end.seen) == 1


async def test_a_cancelled_write_is_never_called(connect, site, worker, engine, imported, back_end):
    await database_sync_to_async(imported)()
    client, _ = await widget(connect, site)
    frames = await ask(client, "cancel order A7731 please")
    call_id = of_type(frames, "action")[0]["call_id"]
    await client.send({"type": "action.cancel", "call_id": call_id})
    cancelled = await until(client, "action")
    assert cancelled[-1]["status"] == "cancelled"
    await client.send({"type": "action.confirm", "call_id": call_id})
    after = await until(client, "action")
    assert after[-1]["status"] == "cancelled" and back_end.seen == []


async def test_another_conversations_call_cannot_be_confirmed(
    connect, site, worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    owner, _ = await widget(connect, site)
    frames = await ask(owner, "cancel order A7731")
    call_id = of_type(frames, "action")[0]["call_id"]
    stranger, _ = await widget(connect, site, customer="cust-7")
    await stranger.send({"type": "message", "text": "hello", "client_id": "h"})
    await until(stranger, "bot.done")
    await stranger.send({"type": "action.confirm", "call_id": call_id})
    [error] = of_type(await until(stranger, "error"), "error")
    assert error["code"] == "unknown_action_call"
    assert back_end.seen == []
    assert (await ActionCall.objects.aget(pk=call_id)).status == "confirm_required"


# --- the chat API: the company's back end names the customer ---------------------------------


async def test_the_chat_apis_verified_customer_gets_the_look_up_and_confirms_once(
    worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    api = await make_client(scopes=(ApiScope.CHAT, ApiScope.CUSTOMERS))
    engine.reply = lambda prompt: "It has shipped."
    response = await chat(
        api, session_id="s1", user_input="Where is my order A7731?", customer={"id": "cust-42"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    [action] = body["actions"]
    assert action["status"] == "ok" and action["text"] == "Order A7731: shipped, due 2030-01-02"
    [request] = back_end.seen
    assert request.query == {"customer": ["cust-42"]}

    body = (
        await chat(
            api, session_id="s1", user_input="Cancel order A7731", customer={"id": "cust-42"}
        )
    ).json()
    [waiting] = body["actions"]
    assert waiting["status"] == "confirm_required" and body["finish_reason"] == "confirm"
    assert len(back_end.seen) == 1  # nothing called before the confirmation
    path = f"/api/v1/sessions/s1/actions/{waiting['call_id']}/confirm"
    first, second = await asyncio.gather(api.post(path), api.post(path))
    assert {first.status_code, second.status_code} == {200}
    assert {first.json()["status"], second.json()["status"]} <= {"ok", "confirmed"}
    assert len(back_end.seen) == 2 and back_end.seen[1].path == "/echo/A7731/cancel"
    # Another session's call is not found.
    other = await make_client(scopes=(ApiScope.CHAT,))
    await chat(other, session_id="s2", user_input="hello")
    missing = await other.post(f"/api/v1/sessions/s2/actions/{waiting['call_id']}/cancel")
    assert missing.status_code == 404


async def test_the_chat_api_without_a_customer_calls_no_verified_action(
    worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    api = await make_client()
    body = (await chat(api, session_id="s", user_input="Where is my order A7731?")).json()
    assert body["actions"] == [] and back_end.seen == []


def test_the_admin_transcript_shows_the_calls_and_no_secret(admin_client, back_end, monkeypatch):
    from chat.actions import services as action_services
    from chat.actions.outcome import Outcome
    from chat.models import Conversation
    from tests.actions.helpers import make_action

    monkeypatch.setenv("SHOP_TOKEN", "s3cr3t-value-never-shown")
    action = make_action(
        url=f"{back_end.url}/orders/{{order_id}}", headers={"X-Token": "${SHOP_TOKEN}"}
    )
    action.save()
    conversation = Conversation.objects.create(token_hash="x" * 64)
    action_services.call_record(
        conversation_id=conversation.pk,
        action=action,
        arguments={"order_id": "A7731"},
        outcome=Outcome(status="ok", http_status=200, latency_ms=12, text="Order A7731: shipped"),
    )
    page = admin_client.get(f"/admin/chat/conversation/{conversation.pk}/change/").content.decode()
    assert "order_status" in page and "Order A7731: shipped" in page and "A7731" in page
    assert "s3cr3t-value-never-shown" not in page and "SHOP_TOKEN" not in page


async def test_a_reload_gets_each_answers_calls_in_its_history(
    connect, site, worker, engine, imported, back_end
):
    await database_sync_to_async(imported)()
    client, first = await widget(connect, site)
    frames = await ask(client, "Please cancel order A7731")
    asked = of_type(frames, "action")[0]
    again, _ = await connect(
        f"site={site.key}&conversation={first['id']}&token={first['token']}", headers=HEADERS
    )
    history = (await until(again, "history"))[-1]
    [answer] = [m for m in history["messages"] if m["role"] == "bot"]
    [call] = answer["calls"]
    # Still waiting: the card comes back with what it will do, so Confirm still works.
    assert call["call_id"] == asked["call_id"] and call["status"] == "confirm_required"
    assert call["confirm_text"] == asked["confirm_text"]
    assert "calls" not in [m for m in history["messages"] if m["role"] == "customer"][0]


async def test_secrets_and_tokens_reach_no_prompt_transcript_export_or_log(
    connect, site, worker, engine, imported, back_end, monkeypatch, caplog
):
    from chat import exports
    from chat.models import Conversation

    secret = "s3cr3t-shop-key-2f9d"
    monkeypatch.setenv("SHOP_API_KEY", secret)
    await database_sync_to_async(imported)(headers={"X-Api-Key": "${SHOP_API_KEY}"})
    token = sign(site.identity_secret, "cust-42")
    client, first = await connect(f"site={site.key}&customer_token={token}", headers=HEADERS)
    await until(client, "customer.verified")
    with caplog.at_level("DEBUG"):
        frames = await ask(client, "Where is my order A7731?")
    assert back_end.seen[0].headers.get("X-Api-Key") == secret  # the back end got it
    stored = await Message.objects.aget(pk=frames[-1]["message_id"])
    export = await database_sync_to_async(
        lambda: "".join(exports.transcripts_json(Conversation.objects.filter(pk=first["id"])))
    )()
    for where in (json.dumps(stored.prompt), json.dumps(frames), export, caplog.text):
        assert secret not in where and token not in where and site.identity_secret not in where


async def test_the_looked_up_order_answers_not_the_help_centre_lines_sharing_its_words(
    connect, site, worker, engine, imported, back_end
):
    """With the sample help centre, "my order" finds the returns page too: the figures of
    the looked-up order are the answer's, and a made-up one gets the result itself."""
    await database_sync_to_async(call_command)("import_knowledge", "--sample", stdout=io.StringIO())
    await database_sync_to_async(imported)()
    client, _ = await widget(connect, site)
    engine.reply = lambda prompt: "Your order A7731 has shipped and arrives on 2030-01-02."
    frames = await ask(client, "Where is my order A7731? I want to return it.")
    assert frames[-1]["finish_reason"] == "stop" and frames[-1]["guards"] == []
    assert answer_text(frames) == "Your order A7731 has shipped and arrives on 2030-01-02."

    engine.reply = lambda prompt: "Your order A7731 arrives on 2031-05-05."
    frames = await ask(client, "And where is my order A7731 now?")
    assert frames[-1]["finish_reason"] == "quoted"
    assert frames[-1]["guards"] == ["result", "quoted"]
    assert answer_text(frames) == "Order A7731: shipped, due 2030-01-02"

    # An answer that ignores the result, or says otherwise, gets the result too.
    for number, said in enumerate(
        ("I don't know where your order is.", "Your order A7731 has not shipped yet.")
    ):
        engine.reply = lambda prompt, said=said: said
        frames = await ask(client, f"{number}: has A7731 shipped?")
        assert frames[-1]["guards"] == ["result", "quoted"], said
        assert answer_text(frames) == "Order A7731: shipped, due 2030-01-02"
