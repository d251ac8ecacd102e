"""An action's `result` and `confirm_text` per language (chat/actions/localized.py): the
fallback order, the checks on save and import, and a Chinese conversation reading the Chinese
confirmation and card while an English one reads the English ones of the same actions."""

import asyncio
import io
import json

import pytest
from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django.core.management import call_command

from chat.actions import localized, texts
from chat.actions.models import Action
from tests.actions.helpers import BackEnd, make_action
from tests.customers.helpers import SHOP, make_site, sign

ORDER = r"\b([A-Z][0-9]{4})\b"
BOTH = {"en": "Cancel order {order_id}?", "zh": "取消订单 {order_id}？"}


@pytest.mark.parametrize(
    ("value", "language", "expected"),
    [
        (BOTH, "zh", "取消订单 {order_id}？"),
        (BOTH, "zh-CN", "取消订单 {order_id}？"),  # the primary language when no zh-CN
        ({"zh": "简体", "zh-TW": "繁體"}, "zh-TW", "繁體"),  # the exact tag first
        (BOTH, "de", "Cancel order {order_id}?"),  # no German: English
        (BOTH, "", "Cancel order {order_id}?"),
        ({"zh": "取消", "fr": "Annuler"}, "de", "取消"),  # no English either: the first given
        ("Cancel order {order_id}?", "zh", "Cancel order {order_id}?"),  # one for everyone
        ("", "zh", ""),
        ({}, "en", ""),
    ],
)
def test_the_template_of_the_conversations_language_then_english_then_the_first(
    value, language, expected
):
    assert localized.template_for(value, language) == expected


def test_the_confirmation_is_asked_in_the_conversations_language():
    ask = {"description": "Cancel an order.", "arguments": {"order_id": "A1002"}}
    assert texts.confirmation(confirm_text=BOTH, language="zh-CN", **ask) == (
        "要继续吗？取消订单 A1002？"
    )
    assert texts.confirmation(confirm_text=BOTH, language="en", **ask) == (
        "Shall I go ahead? Cancel order A1002?"
    )


def _problems(**fields) -> dict:
    with pytest.raises(ValidationError) as raised:
        make_action(**fields).full_clean()
    return raised.value.message_dict


@pytest.mark.django_db
def test_each_languages_template_is_checked_and_named_with_its_language():
    problems = _problems(
        result={"en": "Order {order_id}", "zh": "订单 {0}", "Klingon!": "x", "fr": 3},
        confirm=True,
        confirm_text={"zh": "取消 {order}"},
    )
    result = " | ".join(problems["result"])
    assert "zh: {0} is not a placeholder" in result
    assert "'Klingon!' is not a language code" in result and "fr: must be text" in result
    assert not any(p.startswith("en:") for p in problems["result"])  # English is fine
    assert problems["confirm_text"] == [
        "zh: {order} names no parameter (it shows the call's arguments)"
    ]
    assert "result" in _problems(result=["Order {order_id}"])  # neither text nor a mapping
    assert "confirm_text" in _problems(confirm_text={"en": "Cancel {order_id}?"})  # no confirm


@pytest.mark.django_db
def test_a_file_gives_templates_per_language_and_one_template_still_works(tmp_path):
    path = tmp_path / "actions.yaml"
    path.write_text(
        """
actions:
  - name: cancel_order
    description: Cancel an order.
    url: "https://shop.example.com/orders/{order_id}/cancel"
    method: POST
    audience: public
    parameters: {type: object, properties: {order_id: {type: string}}, required: [order_id]}
    confirm: true
    confirm_text: {en: "Cancel order {order_id}?", zh: "取消订单 {order_id}？"}
    result:
      en: "Order {order_id}: {status}"
      zh: "订单 {order_id}：{status}"
  - name: order_status
    description: Look up an order.
    url: "https://shop.example.com/orders/{order_id}"
    audience: public
    parameters: {type: object, properties: {order_id: {type: string}}, required: [order_id]}
    result: "Order {order_id}: {status}"
""",
        encoding="utf-8",
    )
    call_command("import_actions", str(path), stdout=io.StringIO())
    cancel = Action.objects.get(name="cancel_order")
    assert cancel.confirm_text == BOTH
    assert cancel.result == {"en": "Order {order_id}: {status}", "zh": "订单 {order_id}：{status}"}
    assert Action.objects.get(name="order_status").result == "Order {order_id}: {status}"


@pytest.mark.django_db
def test_the_sample_actions_speak_chinese_too():
    call_command("import_actions", "--sample", stdout=io.StringIO())
    cancel = Action.objects.get(name="cancel_order")
    assert localized.template_for(cancel.confirm_text, "zh-CN") == "取消订单 {order_id}。"
    for action in Action.objects.all():
        assert "status_text_zh" in localized.template_for(action.result, "zh")
        assert "status_text}" in localized.template_for(action.result, "en")


@pytest.mark.django_db
def test_admin_takes_text_or_a_mapping_of_languages(admin_client):
    from chat.admin.actions import ActionForm

    fields = {
        "name": "cancel_order",
        "description": "Cancel an order.",
        "enabled": "on",
        "method": "POST",
        "url": "https://shop.example.com/orders/{order_id}/cancel",
        "headers": "{}",
        "timeout_seconds": "5",
        "parameters": json.dumps(
            {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            }
        ),
        "audience": "public",
        "confirm": "on",
        "confirm_text": json.dumps(BOTH, ensure_ascii=False),
        "result": "{order_id} is on its way",  # braces, and still one template
        "triggers": "[]",
    }
    form = ActionForm(data=fields)
    assert form.is_valid(), form.errors
    action = form.save()
    assert action.confirm_text == BOTH and action.result == "{order_id} is on its way"
    page = admin_client.get(f"/admin/chat/action/{action.pk}/change/").content.decode()
    assert "取消订单 {order_id}？" in page


# --- in a conversation ---------------------------------------------------------------------


def _actions_file(tmp_path, back_end: BackEnd) -> str:
    by_number = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^[A-Z][0-9]{4}$"}},
        "required": ["order_id"],
    }
    actions = [
        {
            "name": "order_status",
            "description": "Look up one of the customer's orders by its number.",
            "parameters": by_number,
            "url": f"{back_end.url}/orders/{{order_id}}?customer={{customer.id}}",
            "result": {"en": "Order {order_id}: {status}", "zh": "订单 {order_id}：{status}"},
            "triggers": [{"pattern": ORDER, "parameter": "order_id"}],
        },
        {
            "name": "cancel_order",
            "description": "Cancel one of the customer's orders that has not shipped.",
            "parameters": by_number,
            "method": "POST",
            "url": f"{back_end.url}/echo/{{order_id}}/cancel?customer={{customer.id}}",
            "confirm": True,
            "confirm_text": BOTH,
            "result": {"en": "Order {order_id}: {status}", "zh": "订单 {order_id}：{status}"},
            "triggers": [{"pattern": r"(?i)(?:取消|cancel).*?" + ORDER, "parameter": "order_id"}],
        },
    ]
    path = tmp_path / "actions.json"
    path.write_text(json.dumps(actions, ensure_ascii=False), encoding="utf-8")
    return str(path)


async def _frames_until(client, kind: str, *, status: str | None = None) -> list[dict]:
    frames = []
    async with asyncio.timeout(10):
        while True:
            frames.append(await client.receive())
            if frames[-1]["type"] == kind and status in (None, frames[-1].get("status")):
                return frames


@pytest.mark.django_db(transaction=True)
async def test_a_chinese_conversation_reads_the_chinese_confirmation_and_cards(
    connect, worker, engine, tmp_path, back_end
):
    site = await database_sync_to_async(make_site)()
    await database_sync_to_async(call_command)(
        "import_actions", _actions_file(tmp_path, back_end), stdout=io.StringIO()
    )

    async def widget(lang: str):
        token = sign(site.identity_secret, "cust-42")
        client, _ = await connect(
            f"site={site.key}&lang={lang}&customer_token={token}",
            headers=[(b"origin", SHOP.encode())],
        )
        assert (await client.receive())["type"] == "customer.verified"
        return client

    chinese, english = await widget("zh-CN"), await widget("en")
    await chinese.send({"type": "message", "text": "请取消订单 A7731", "client_id": "c1"})
    frames = await _frames_until(chinese, "bot.done")
    [card] = [f for f in frames if f["type"] == "action"]
    assert card["confirm_text"] == "要继续吗？取消订单 A7731？"
    said = "".join(f["text"] for f in frames if f["type"] == "bot.delta")
    assert said == "要继续吗？取消订单 A7731？"
    await chinese.send({"type": "action.confirm", "call_id": card["call_id"]})
    done = (await _frames_until(chinese, "action", status="ok"))[-1]
    assert done["text"] == "订单 A7731：echoed"  # the result, rendered in Chinese

    await chinese.send({"type": "message", "text": "我的订单 A7731 到哪了？", "client_id": "c2"})
    frames = await _frames_until(chinese, "bot.done")
    # (The confirmed call's frame may come again, from the conversation's group.)
    [looked_up] = [f for f in frames if f["type"] == "action" and f["name"] == "order_status"]
    assert looked_up["text"] == "订单 A7731：shipped"

    await english.send({"type": "message", "text": "Cancel order A7731 please", "client_id": "e"})
    [card] = [f for f in await _frames_until(english, "bot.done") if f["type"] == "action"]
    assert card["confirm_text"] == "Shall I go ahead? Cancel order A7731?", card
