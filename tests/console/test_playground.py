"""The staff playground (/console/playground/) through Django's clients, the real views, real
Redis and an in-process worker on the synthetic token source: staff only, answers streamed as
Server-Sent Events with the pane's settings reaching the worker, side by side, the system
prompt preview, save as bot profile (with its admin history) and the JSON export."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.test import AsyncClient, Client

from agents.models import Ticket
from chat import services as chat_services
from chat.models import BotProfile, Conversation, Message
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from tests.api.helpers import parse_sse, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

SEND = "/console/playground/send/"
PROMPT = "You are Zed of {site_name}. Speak {language} to a customer in {user_region}."
SETTINGS = {
    "temperature": "1.3",
    "top_p": "0.55",
    "max_tokens": "12",
    "frequency_penalty": "0.4",
    "system_prompt": PROMPT,
    "language": "de",
    "region": "Bavaria",
    "timezone": "Europe/Berlin",
}


def make_user(django_user_model, username, *, staff=True, perms=()):
    user = django_user_model.objects.create_user(
        username=username, password="pw-" + username, is_staff=staff
    )
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def live_profile(**fields) -> BotProfile:
    """The live default profile, and the only one (the data migration's may be there)."""
    BotProfile.objects.all().delete()
    return BotProfile.objects.create(
        name=DEFAULT_PROFILE_NAME,
        is_default=True,
        system_prompt=DEFAULT_SYSTEM_PROMPT,
        site_name="Acme",
        **fields,
    )


async def staff_client(django_user_model, username="lead") -> tuple[AsyncClient, object]:
    user = await sync_to_async(make_user)(django_user_model, username)
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    return client, user


async def ask(client: AsyncClient, text: str, **fields):
    """(response, SSE events) of one question with SETTINGS overridden by `fields`."""
    response = await client.post(SEND, {**SETTINGS, **fields, "message": text})
    if not response["Content-Type"].startswith("text/event-stream"):
        return response, []
    return response, parse_sse(await read_stream(response))


def request_for(engine, text: str) -> str:
    """The id of the worker request whose prompt carried `text`."""
    return next(rid for rid, prompt in engine.prompts.items() if text in prompt)


# --- Access -------------------------------------------------------------------------------------


def test_only_staff_get_in(client, django_user_model):
    gets = [
        "/console/playground/",
        "/console/playground/settings/?pane=a",
        "/console/playground/export/?a=00000000-0000-0000-0000-000000000000",
    ]
    posts = ["/console/playground/preview/", "/console/playground/save/", SEND]
    customer = Client()
    customer.force_login(make_user(django_user_model, "bob", staff=False))
    profiles = list(BotProfile.objects.values())
    for who in (client, customer):
        for url in gets:
            response = who.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/?next=/console/playground/"), url
        for url in posts:
            response = who.post(url, {**SETTINGS, "pane": "a", "message": "hi", "confirm": "1"})
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
        # htmx partials send the whole page to the login, as elsewhere in the console.
        response = who.get("/console/playground/settings/?pane=a", headers={"HX-Request": "true"})
        assert response.status_code == 403 and response["HX-Redirect"].startswith("/admin/login/")
    assert not Conversation.objects.exists() and list(BotProfile.objects.values()) == profiles

    staff = Client()
    staff.force_login(make_user(django_user_model, "ann"))
    page = staff.get("/console/playground/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/console/playground/" aria-current="page">Playground' in html
    assert 'id="a-temperature"' in html and 'id="b-temperature"' in html


def test_posts_need_the_csrf_token(django_user_model):
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(make_user(django_user_model, "ann"))
    for url in (SEND, "/console/playground/save/", "/console/playground/preview/"):
        assert checked.post(url, {**SETTINGS, "pane": "a", "message": "hi"}).status_code == 403
    assert not Message.objects.exists()


# --- Streaming answers --------------------------------------------------------------------------


async def test_an_answer_streams_with_the_panes_settings(django_user_model, worker, engine):
    await sync_to_async(live_profile)()
    engine.reply = lambda prompt: "Guten Tag! Wie kann ich helfen?"  # 31 characters: cut at 12
    client, user = await staff_client(django_user_model)

    response, events = await ask(client, "Wo ist mein Paket?")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["X-Accel-Buffering"] == "no"
    names = [name for name, _ in events]
    assert names[:2] == ["message.ack", "bot.start"] and names[-1] == "bot.done"
    assert set(names[2:-1]) == {"bot.delta"}
    done = events[-1][1]
    assert "".join(d["text"] for n, d in events if n == "bot.delta") == "Guten Tag! W"
    assert done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 12
    assert done["usage"]["prompt_tokens"] > 0 and done["total_ms"] >= 0

    # What the worker got: the sliders' values and the overridden prompt, rendered.
    rid = request_for(engine, "Wo ist mein Paket?")
    assert engine.samplings[rid] == {
        "temperature": 1.3,
        "top_p": 0.55,
        "max_tokens": 12,
        "frequency_penalty": 0.4,
    }
    assert "You are Zed of Acme. Speak German to a customer in Bavaria." in engine.prompts[rid]
    assert "customer-service assistant" not in engine.prompts[rid]

    conversation = await Conversation.objects.aget(pk=response["X-Playground-Conversation"])
    assert conversation.channel == Conversation.Channel.PLAYGROUND
    assert conversation.metadata["playground"]["staff_id"] == user.pk
    assert (conversation.language, conversation.region, conversation.timezone) == (
        "de",
        "Bavaria",
        "Europe/Berlin",
    )

    # The same conversation goes on, with new settings; the model sees the history.
    response, events = await ask(
        client,
        "Und wann?",
        conversation=str(conversation.pk),
        temperature="0.2",
        max_tokens="5",
        language="fr",
    )
    assert response.status_code == 200, response.content
    assert response["X-Playground-Conversation"] == str(conversation.pk)
    assert events[-1][0] == "bot.done"
    rid = request_for(engine, "Und wann?")
    assert engine.samplings[rid]["temperature"] == 0.2
    assert engine.samplings[rid]["max_tokens"] == 5
    assert "Wo ist mein Paket?" in engine.prompts[rid] and "Speak French" in engine.prompts[rid]
    assert await Message.objects.filter(conversation=conversation).acount() == 4


async def test_side_by_side_asks_two_conversations_at_once(django_user_model, worker, engine):
    client, _user = await staff_client(django_user_model)
    (a, a_events), (b, b_events) = await asyncio.gather(
        ask(client, "Compare me", temperature="0.1"),
        ask(client, "Compare me", temperature="1.9", system_prompt="Be brief."),
    )
    assert a_events[-1][0] == b_events[-1][0] == "bot.done"
    assert a["X-Playground-Conversation"] != b["X-Playground-Conversation"]
    asked = {engine.samplings[rid]["temperature"]: prompt for rid, prompt in engine.prompts.items()}
    assert set(asked) == {0.1, 1.9}
    assert "Be brief." in asked[1.9] and "Be brief." not in asked[0.1]
    assert await Conversation.objects.filter(channel="playground").acount() == 2


async def test_bad_settings_and_other_conversations_are_refused(django_user_model, worker, engine):
    client, _user = await staff_client(django_user_model)
    response, _ = await ask(client, "What do you sell?", temperature="3")
    assert response.status_code == 400 and "temperature" in response.json()["error"]["message"]
    response, _ = await ask(
        client, "What do you sell?", max_tokens="100000"
    )  # over the profile's limit
    assert response.status_code == 400 and "320" in response.json()["error"]["message"]

    # A customer's conversation, or another staff member's playground, is never written to.
    customer, _token = await sync_to_async(chat_services.conversation_start)()
    other, _ = await staff_client(django_user_model, "other")
    other_response, _ = await ask(other, "mine")
    for conversation_id in (customer.pk, other_response["X-Playground-Conversation"]):
        response, _ = await ask(client, "let me in", conversation=str(conversation_id))
        assert response.status_code == 404
    assert not await Message.objects.filter(text="let me in").aexists()


async def test_asking_for_a_human_is_not_handed_off(django_user_model, worker, engine):
    client, _user = await staff_client(django_user_model)
    response, _ = await ask(client, "I want to talk to a human")
    assert response.status_code == 409
    assert "does not hand off" in response.json()["error"]["message"]
    assert not await Message.objects.aexists() and not await Ticket.objects.aexists()
    assert not engine.prompts


# --- Preview ------------------------------------------------------------------------------------


def test_the_preview_fills_the_variables_and_escapes(django_user_model):
    live_profile()
    client = Client()
    client.force_login(make_user(django_user_model, "ann"))
    response = client.post(
        "/console/playground/preview/",
        {
            "system_prompt": "<script>alert(1)</script> {site_name}/{language}/{user_region} "
            "at {current_time}",
            "language": "zh-CN",
            "region": "Taiwan",
            "timezone": "Asia/Taipei",
        },
    )
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Acme/Simplified Chinese/Taiwan at" in html
    assert "<script>" not in html and "CST" in html  # Taipei's zone abbreviation
    bad = client.post("/console/playground/preview/", {"timezone": "Mars/Olympus"})
    assert "IANA time zone" in bad.content.decode()


# --- Save as bot profile ------------------------------------------------------------------------


def test_save_as_profile_asks_first_then_writes_and_logs(django_user_model):
    profile = live_profile()
    lead = make_user(django_user_model, "lead", perms=("change_botprofile", "add_botprofile"))
    client = Client()
    client.force_login(lead)
    form = {**SETTINGS, "pane": "a", "profile": str(profile.pk), "max_tokens": "200"}

    asked = client.post("/console/playground/save/", form)
    html = asked.content.decode()
    assert "Confirm save" in html and "Temperature" in html and "1.3" in html
    profile.refresh_from_db()
    assert profile.temperature == 0.7 and not LogEntry.objects.exists()

    saved = client.post("/console/playground/save/", {**form, "confirm": "1"})
    assert saved["HX-Retarget"] == "#a-settings" and "Saved bot profile" in saved.content.decode()
    profile.refresh_from_db()
    assert (
        profile.temperature,
        profile.top_p,
        profile.max_tokens,
        profile.frequency_penalty,
        profile.system_prompt,
    ) == (1.3, 0.55, 200, 0.4, PROMPT)
    entry = LogEntry.objects.get()
    assert (entry.user, entry.action_flag, entry.object_id) == (lead, CHANGE, str(profile.pk))
    assert entry.content_type.model_class() is BotProfile
    assert "temperature" in entry.get_change_message() and "playground" in entry.change_message

    client.post(
        "/console/playground/save/",
        {**form, "temperature": "0.2", "target": "new", "new_name": "Terse", "confirm": "1"},
    )
    terse = BotProfile.objects.get(name="Terse")
    assert terse.temperature == 0.2 and not terse.is_default and terse.site_name == "Acme"
    assert LogEntry.objects.filter(
        action_flag=ADDITION, object_id=str(terse.pk), user=lead
    ).exists()
    profile.refresh_from_db()
    assert profile.temperature == 1.3  # the live profile stayed as saved


def test_save_needs_the_admin_permission(django_user_model):
    profile = live_profile()
    client = Client()
    client.force_login(make_user(django_user_model, "ann"))  # staff, no profile permissions
    response = client.post(
        "/console/playground/save/",
        {**SETTINGS, "pane": "a", "profile": str(profile.pk), "confirm": "1"},
    )
    assert "You do not have permission to change bot profiles." in response.content.decode()
    profile.refresh_from_db()
    assert profile.temperature == 0.7 and not LogEntry.objects.exists()


# --- Export -------------------------------------------------------------------------------------


async def test_export_is_the_stored_session(django_user_model, worker, engine):
    await sync_to_async(live_profile)()
    client, user = await staff_client(django_user_model)
    first, _ = await ask(client, "When do parcels ship?")
    second, _ = await ask(client, "Compare me", temperature="0.1")
    a, b = first["X-Playground-Conversation"], second["X-Playground-Conversation"]

    response = await client.get(f"/console/playground/export/?a={a}&b={b}")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="playground-')
    data = json.loads(response.content)
    assert data["exported_by"] == "lead" and [p["pane"] for p in data["panes"]] == ["A", "B"]
    pane = data["panes"][0]
    assert pane["conversation_id"] == a and pane["channel"] == "playground"
    question, answer = pane["messages"]
    assert (question["role"], question["text"]) == ("customer", "When do parcels ship?")
    assert answer["role"] == "bot" and answer["reply_to"] == question["id"]
    stored = await Message.objects.aget(pk=answer["id"])
    assert answer["text"] == stored.text == engine.reply("")[:12]
    assert answer["settings"]["temperature"] == 1.3 and answer["settings"]["max_tokens"] == 12
    assert answer["settings"]["system_prompt"] == PROMPT and answer["settings"]["language"] == "de"
    assert answer["prompt"][0]["role"] == "system"
    assert answer["prompt"][0]["content"].startswith("You are Zed of Acme. Speak German")
    figures = answer["figures"]
    assert figures["completion_tokens"] == 12 and figures["finish_reason"] == "length"
    assert figures["prompt_tokens"] == stored.prompt_tokens > 0
    assert figures["total_ms"] == stored.total_ms and figures["ttft_ms"] == stored.ttft_ms
    assert pane["totals"]["answers"] == 1 and pane["totals"]["completion_tokens"] == 12
    assert data["panes"][1]["messages"][1]["settings"]["temperature"] == 0.1

    other, _ = await staff_client(django_user_model, "other")
    assert (await other.get(f"/console/playground/export/?a={a}")).status_code == 404


def test_playground_conversations_stay_out_of_the_inbox(django_user_model):
    staff = django_user_model.objects.create_user("lead", password="x", is_staff=True)
    played, _ = chat_services.conversation_start(channel=Conversation.Channel.PLAYGROUND)
    customer, _ = chat_services.conversation_start()
    client = Client()
    client.force_login(staff)
    groups = client.get("/console/").context["inbox"].groups
    shown = {row.pk for group in groups for row in group.rows}
    assert customer.pk in shown and played.pk not in shown
