"""Calls the model proposes (chat/answering/proposing.py), through the real ASGI router, answer
run and worker (the synthetic token source, whose scripted reply is a Qwen-format call when
the prompt offers tools), against a real HTTP back end of the test's own.

A valid call is made once, for the verified customer (never a customer the model names), shown,
recorded as the model's, and answered from in a second request without tools; a call the
product refuses (bad arguments, a limit, no call at all) never reaches the customer as call
text; an answer with nothing to offer is asked exactly as before. Most tests let the model
decide (ACTIONS_MODEL_CALLS=auto); with the default ("sure") it is offered tools only where a
call is certain to be wanted."""

import asyncio
import io
import json

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from chat.actions.models import ActionCall
from chat.answering.prompt import ToolOffer
from chat.answering.proposing import names_a_tool
from chat.models import BotProfile, Message
from chat.prompting import DEFAULT_SYSTEM_PROMPT
from inference_worker.synthetic import tool_call_text
from tests.actions.helpers import BackEnd, answer_text, ask, of_type, widget
from tests.customers.helpers import make_site

pytestmark = pytest.mark.django_db(transaction=True)

ORDER_ID = {"type": "string", "pattern": "^[A-Z][0-9]{4}$"}
ANSWER = "Your order has shipped and is due on 2030-01-02."


def _actions(back_end: BackEnd) -> dict:
    by_number = {"type": "object", "properties": {"order_id": ORDER_ID}, "required": ["order_id"]}
    return {
        "order_status": {
            "name": "order_status",
            "description": "Look up one of the customer's orders by its number.",
            "parameters": by_number,
            "url": f"{back_end.url}/orders/{{order_id}}?customer={{customer.id}}",
            "result": "Order {order_id}: {status}, due {eta}",
            "timeout_seconds": 1,
        },
        "latest_order": {
            "name": "latest_order",
            "description": "Look up the customer's most recent order.",
            "url": f"{back_end.url}/orders/latest?customer={{customer.id}}",
            "result": "Order {order_id}: {status}, due {eta}",
            "timeout_seconds": 1,
        },
        "broken_order_status": {
            "name": "broken_order_status",
            "description": "Look up the customer's most recent order (a back end that fails).",
            "url": f"{back_end.url}/status/503?customer={{customer.id}}",
            "result": "Order {order_id}: {status}",
            "timeout_seconds": 1,
        },
        "cancel_order": {
            "name": "cancel_order",
            "description": "Cancel one of the customer's orders that has not shipped.",
            "parameters": by_number,
            "method": "POST",
            "url": f"{back_end.url}/echo/{{order_id}}/cancel?customer={{customer.id}}",
            "confirm": True,
            "confirm_text": "Cancel order {order_id}?",
            "result": "Order {order_id}: {status}",
        },
        "order_status_by_email": {
            "name": "order_status_by_email",
            "description": "Look up an order by its number and the e-mail address.",
            "audience": "public",
            "parameters": {
                "type": "object",
                "properties": {"order_id": ORDER_ID, "email": {"type": "string"}},
                "required": ["order_id", "email"],
            },
            "url": f"{back_end.url}/orders/{{order_id}}?email={{email}}",
            "result": "Order {order_id}: {status}",
        },
    }


@pytest.fixture
def imported(tmp_path, back_end):
    """imported("order_status", ...): those actions, calling `back_end`, imported."""

    def _import(*names: str) -> None:
        path = tmp_path / "actions.json"
        defined = _actions(back_end)
        path.write_text(json.dumps([defined[name] for name in names]))
        call_command("import_actions", str(path), stdout=io.StringIO())

    return lambda *names: database_sync_to_async(_import)(*names)


@pytest.fixture(autouse=True)
def model_decides(actions_settings):
    """The model is offered the actions whenever they may apply (ACTIONS_MODEL_CALLS=auto)."""
    actions_settings(MODEL_CALLS="auto")


@pytest.fixture
async def site():
    return await database_sync_to_async(make_site)()


def calling(*calls: tuple[str, object], answer: str = ANSWER):
    """The model's reply: these calls while it is offered tools, `answer` otherwise."""
    text = "\n".join(tool_call_text(name, arguments) for name, arguments in calls)
    return lambda prompt: text if "# Tools" in prompt else answer


def no_call_text(frames) -> bool:
    shown = json.dumps(frames)
    return "tool_call" not in shown and '"arguments": {\\"' not in shown


def tool_uses(engine) -> list:
    return list(engine.tool_uses.values())


async def calls_of(conversation_id) -> list[ActionCall]:
    return [c async for c in ActionCall.objects.filter(conversation_id=conversation_id)]


async def test_the_models_call_is_made_once_for_the_verified_customer_and_answered_from(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status")
    # The model names another customer too: dropped, never sent.
    engine.reply = calling(("order_status", {"order_id": "A7731", "customer": "cust-99"}))
    client, first = await widget(connect, site)
    frames = await ask(client, "Has the thing I bought last week been sent yet?")

    [request] = back_end.seen
    assert request.path == "/orders/A7731" and request.query == {"customer": ["cust-42"]}
    [action] = of_type(frames, "action")
    assert action["status"] == "ok" and action["arguments"] == {"order_id": "A7731"}
    assert action["text"] == "Order A7731: shipped, due 2030-01-02"
    # Offered with tools once; then asked without them, with the result in the prompt.
    offered, second = tool_uses(engine)
    assert offered.mode == "auto" and offered.names == {"order_status"}
    assert second is None
    last_prompt = list(engine.prompts.values())[-1]
    assert "Order A7731: shipped, due 2030-01-02" in last_prompt and "# Tools" not in last_prompt
    done = frames[-1]
    assert done["finish_reason"] == "stop" and "tool_calls" not in done
    # Both requests are the answer's cost (the source counts a character as a token).
    assert done["usage"]["prompt_tokens"] == sum(len(p) for p in engine.prompts.values())
    assert answer_text(frames) == ANSWER and no_call_text(frames)
    [call] = await calls_of(first["id"])
    assert call.proposed_by == "model" and call.status == "ok"
    assert call.arguments == {"order_id": "A7731"} and call.message_id == done["message_id"]


async def test_a_call_with_invalid_arguments_is_not_made_and_the_answer_comes_without_tools(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status")
    engine.reply = calling(("order_status", {"order_id": "1234"}), answer="Which order?")
    client, first = await widget(connect, site)
    frames = await ask(client, "Has the thing I bought last week been sent yet?")
    assert back_end.seen == [] and of_type(frames, "action") == []
    assert answer_text(frames) == "Which order?" and no_call_text(frames)
    assert tool_uses(engine)[-1] is None
    [call] = await calls_of(first["id"])  # on the record, for staff
    assert call.status == "refused" and call.reason == "invalid_arguments"
    assert call.proposed_by == "model" and call.message_id is None


async def test_output_written_as_a_call_that_is_none_never_reaches_the_customer(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status")
    engine.reply = lambda prompt: (
        'Let me look.\n<tool_call>\n{"name": "order_status", "arguments": \n</tool_call>'
        if "# Tools" in prompt
        else "Which order do you mean?"
    )
    client, first = await widget(connect, site)
    frames = await ask(client, "Has the thing I bought last week been sent yet?")
    assert answer_text(frames) == "Which order do you mean?" and no_call_text(frames)
    assert back_end.seen == [] and await calls_of(first["id"]) == []


async def test_a_visitor_nobody_vouches_for_is_offered_only_public_actions(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status", "cancel_order", "order_status_by_email")
    client, _ = await widget(connect, site, customer=None)
    await ask(client, "Has the thing I bought last week been sent yet?")
    [offered] = tool_uses(engine)
    assert offered.names == {"order_status_by_email"}
    assert '"order_status"' not in list(engine.prompts.values())[0]


async def test_with_only_verified_actions_a_visitor_is_asked_exactly_as_without_actions(
    connect, site, worker, engine, imported
):
    client, _ = await widget(connect, site, customer=None)
    await ask(client, "Has the thing I bought last week been sent yet?")
    await imported("order_status")
    again, _ = await widget(connect, site, customer=None)
    await ask(again, "Has the thing I bought last week been sent yet?")
    without, with_verified_only = engine.prompts.values()  # one request each, no more
    assert tool_uses(engine) == [None, None]
    assert "# Tools" not in without and "# Tools" not in with_verified_only


async def test_an_answer_makes_at_most_three_of_the_models_calls(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status")
    orders = ["A0001", "A0002", "A0003", "A0004"]
    # Room for four calls: the synthetic source counts a character as a token.
    await BotProfile.objects.aupdate_or_create(
        is_default=True,
        defaults={"name": "Roomy", "system_prompt": DEFAULT_SYSTEM_PROMPT, "max_tokens": 500},
    )
    engine.reply = calling(*(("order_status", {"order_id": o}) for o in orders))
    client, first = await widget(connect, site)
    frames = await ask(client, "How are all my orders doing?")
    assert [r.path for r in back_end.seen] == [f"/orders/{o}" for o in orders[:3]]
    statuses = [(c.status, c.reason) for c in await calls_of(first["id"])]
    assert statuses == [("ok", "")] * 3 + [("refused", "limit_answer")]
    assert frames[-1]["finish_reason"] == "stop" and answer_text(frames) == ANSWER


async def test_a_write_the_model_proposes_waits_for_the_customers_confirmation(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status", "cancel_order")
    engine.reply = calling(("cancel_order", {"order_id": "A7731"}))
    client, first = await widget(connect, site)
    frames = await ask(client, "I changed my mind about the order I placed, stop it")
    [asked] = of_type(frames, "action")
    assert asked["status"] == "confirm_required" and "Cancel order A7731?" in asked["confirm_text"]
    assert frames[-1]["finish_reason"] == "confirm"
    assert "Cancel order A7731?" in answer_text(frames) and no_call_text(frames)
    assert back_end.seen == [] and len(engine.prompts) == 1  # nothing called, nobody guessed
    await client.send({"type": "action.confirm", "call_id": asked["call_id"]})
    async with asyncio.timeout(10):
        while (await client.receive()).get("status") != "ok":
            pass
    [request] = back_end.seen
    assert request.path == "/echo/A7731/cancel" and request.query == {"customer": ["cust-42"]}
    [call] = await calls_of(first["id"])
    assert call.proposed_by == "model" and call.status == "ok"


async def test_a_question_about_the_latest_order_makes_the_model_call_a_look_up_needing_no_details(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status", "latest_order", "cancel_order")
    engine.reply = calling(("latest_order", {}))
    client, _ = await widget(connect, site)
    frames = await ask(client, "What's the status of my most recent order?")
    offered, _ = tool_uses(engine)
    # Certain to be wanted, and needing nothing the customer did not give: a call it must make.
    assert offered.mode == "required" and offered.names == {"latest_order"}
    assert not offered.parallel
    [request] = back_end.seen
    assert request.path == "/orders/latest" and request.query == {"customer": ["cust-42"]}
    assert of_type(frames, "action")[0]["status"] == "ok"
    assert answer_text(frames) == ANSWER and "ask_details" not in frames[-1]["guards"]


async def test_text_that_speaks_of_the_functions_is_replaced_by_an_answer_without_tools(
    connect, site, worker, engine, imported, back_end
):
    await imported("order_status")
    engine.reply = lambda prompt: (
        "You can call the `order_status` function with your number."
        if "# Tools" in prompt
        else "Could you give me the order number?"
    )
    client, _ = await widget(connect, site)
    frames = await ask(client, "Has the thing I bought last week been sent yet?")
    assert answer_text(frames) == "Could you give me the order number?"
    assert tool_uses(engine)[-1] is None and back_end.seen == []
    stored = await Message.objects.aget(pk=frames[-1]["message_id"])
    assert stored.text == "Could you give me the order number?"


async def test_by_default_tools_are_offered_only_where_a_call_is_certain_to_be_wanted(
    connect, site, worker, engine, imported, back_end, actions_settings
):
    actions_settings(MODEL_CALLS="sure")
    await imported("order_status", "latest_order")
    client, _ = await widget(connect, site)
    await ask(client, "Has the thing I bought last week been sent yet?")
    assert tool_uses(engine) == [None]  # the model may not call: asked as ever
    engine.reply = calling(("latest_order", {}))
    await ask(client, "Where is my last order?")
    assert tool_uses(engine)[1].mode == "required" and len(back_end.seen) == 1
    actions_settings(MODEL_CALLS="off")
    await ask(client, "Where is my latest order?")
    assert tool_uses(engine)[-1] is None and len(back_end.seen) == 1


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("You can call the `latest_order` function.", True),
        ("Use latest_order to find it.", True),
        ('{"name": "anything", "arguments": {"order_id": "A1"}}', True),  # a call without tags
        ("Call refund() with your number.", True),
        ("Your refund is on its way.", False),  # a function's name that is a plain word
        ("Your latest order has shipped.", False),
    ],
)
def test_text_speaking_of_the_functions_is_told_from_an_answer(text, names):
    offered = ToolOffer(
        tools=tuple(
            {"type": "function", "function": {"name": name, "parameters": {}}}
            for name in ("latest_order", "refund")
        )
    )
    assert names_a_tool(text, offered) is names


def test_the_admin_transcript_says_who_proposed_each_call(admin_client):
    from chat.actions import services as action_services
    from chat.actions.outcome import refused
    from chat.models import Conversation
    from tests.actions.helpers import make_action

    action = make_action()
    action.save()
    conversation = Conversation.objects.create(token_hash="p" * 64)
    action_services.call_record(
        conversation_id=conversation.pk,
        action=action,
        arguments={"order_id": "1234"},
        outcome=refused("invalid_arguments", "order_id: '1234' does not match"),
        proposed_by=ActionCall.ProposedBy.MODEL,
    )
    page = admin_client.get(f"/admin/chat/conversation/{conversation.pk}/change/").content.decode()
    assert "The model proposed it (a tool call)" in page and "invalid_arguments" in page


async def test_the_chat_apis_verified_customer_gets_the_models_call(
    worker, engine, imported, back_end, actions_settings
):
    from chat.models import ApiScope
    from tests.api.helpers import chat, make_client

    actions_settings(MODEL_CALLS="sure")
    await imported("latest_order")
    engine.reply = calling(("latest_order", {}))
    api = await make_client(scopes=(ApiScope.CHAT, ApiScope.CUSTOMERS))
    response = await chat(
        api,
        session_id="s1",
        user_input="What's the status of my most recent order?",
        customer={"id": "cust-42"},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    [action] = body["actions"]
    assert action["status"] == "ok" and action["name"] == "latest_order", body
    assert body["response"] == ANSWER and "tool_calls" not in json.dumps(body)
    [request] = back_end.seen
    assert request.query == {"customer": ["cust-42"]}


async def test_a_call_that_failed_gets_the_honest_sentence_and_a_human_without_the_model(
    connect, site, worker, engine, imported, back_end
):
    await imported("broken_order_status")
    engine.reply = calling(("broken_order_status", {}))
    client, _ = await widget(connect, site)
    frames = await ask(client, "Where is my last order?")
    [action] = of_type(frames, "action")
    assert action["status"] == "error" and len(back_end.seen) == 1
    done = frames[-1]
    assert done["finish_reason"] == "action_failed" and done["offer_human"] is True
    assert "human agent" in answer_text(frames) and no_call_text(frames)
    assert len(engine.prompts) == 1  # the model was not asked to guess
    stored = await Message.objects.aget(pk=done["message_id"])
    assert stored.text == answer_text(frames) and stored.guards == "action_failed"
