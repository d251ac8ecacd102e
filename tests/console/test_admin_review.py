"""Transcript review in the admin: filters, search, exports, tickets and access."""

import csv
import datetime as dt
import io
import json
import re
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents.models import CannedReply, Ticket, TicketNote
from chat.models import BotProfile, Conversation, Feedback, Site
from tests.console.admin_helpers import (
    STREAMED,
    bot_profile_form,
    conversation,
    downloaded,
    message,
)

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/chat/conversation/"


def listed(client, query: str = "") -> list[Conversation]:
    response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


@pytest.fixture
def review_data() -> dict[str, Conversation]:
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")
    down = conversation(site=site, language="en")
    message(down, "customer", "my parcel is late")
    for text in ("It is on its way.", "Please wait."):
        feedback = Feedback.Rating.DOWN
        Feedback.objects.create(message=message(down, "bot", text), rating=feedback)
    up = conversation(language="en")
    message(up, "customer", "opening hours?")
    Feedback.objects.create(message=message(up, "bot", "9 to 5."), rating=Feedback.Rating.UP)
    fallback = conversation(language="en")
    message(fallback, "customer", "refund please")
    message(fallback, "bot", "Sorry, we are busy.", is_fallback=True)
    handed_back = conversation(language="en", handoff_requested_at=timezone.now())
    human = conversation(language="en", status=Conversation.Status.HUMAN)
    chinese = conversation(language="zh-CN", csat_score=5)
    message(chinese, "customer", "你好，我的订单在哪里？")
    return {
        "down": down,
        "up": up,
        "fallback": fallback,
        "handed_back": handed_back,
        "human": human,
        "chinese": chinese,
    }


@pytest.mark.parametrize(
    "query, expected",
    [
        ("?rating=down", {"down"}),
        ("?rating=up", {"up"}),
        ("?rating=csat5", {"chinese"}),
        ("?fallback=yes", {"fallback"}),
        ("?fallback=no", {"down", "up", "handed_back", "human", "chinese"}),
        ("?handoff=yes", {"handed_back", "human"}),
        ("?handoff=no", {"down", "up", "fallback", "chinese"}),
        ("?language=zh-CN", {"chinese"}),
        ("?status__exact=human", {"human"}),
        ("?rating=down&language=en", {"down"}),
    ],
)
def test_changelist_filters(admin_client, review_data, query, expected):
    found = listed(admin_client, query)
    assert sorted(c.pk for c in found) == sorted(review_data[name].pk for name in expected)


def test_site_filter(admin_client, review_data):
    site = review_data["down"].site
    assert [c.pk for c in listed(admin_client, f"?site__id__exact={site.pk}")] == [
        review_data["down"].pk
    ]


def test_search_in_message_text_lists_the_conversation_once(admin_client):
    target = conversation()
    message(target, "customer", "Where is my parcel?")
    message(target, "bot", "Your parcel left today.")
    message(target, "customer", "Thanks for the parcel info")
    other = conversation()
    message(other, "customer", "Do you sell gift cards?")
    found = listed(admin_client, "?q=parcel")
    assert [c.pk for c in found] == [target.pk]
    assert listed(admin_client, "?q=gift")[0].pk == other.pk


def test_changelist_columns_without_n_plus_one(admin_client):
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")

    def page_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(ctx.captured_queries)

    def add(n: int) -> None:
        for i in range(n):
            c = conversation(site=site, language="en", csat_score=4)
            message(c, "customer", f"question {i} " + "x" * 100)
            message(c, "bot", "answer")

    add(2)
    few = page_queries()
    add(5)
    assert page_queries() == few

    response = admin_client.get(CHANGELIST)
    row = response.context["cl"].result_list[0]
    assert row.message_count == 2
    html = response.content.decode()
    assert (
        "question 4 " + "x" * 69 + "…" in html
    )  # newest first; its first customer message, cut to 80
    assert re.search(r'<td class="field-site[^"]*">Shop</td>', html)
    assert re.search(r'<td class="field-message_count">2</td>', html)


def export(client, action: str, conversations: list[Conversation]):
    return client.post(
        CHANGELIST,
        {
            "action": action,
            "_selected_action": [str(c.pk) for c in conversations],
        },
    )


def disposition_filename(response) -> str:
    match = re.fullmatch(r'attachment; filename="?([^"]+)"?', response["Content-Disposition"])
    assert match, response["Content-Disposition"]
    return match.group(1)


@STREAMED
def test_json_export_has_exactly_the_selected_transcripts(admin_client, admin_user, review_data):
    agent_conv = review_data["down"]
    message(agent_conv, "agent", "I checked: it arrives tomorrow.", author=admin_user)
    selected = [review_data["down"], review_data["chinese"]]
    response = export(admin_client, "export_json", selected)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert re.fullmatch(r"transcripts-\d{8}-\d{6}\.json", disposition_filename(response))
    data = json.loads(downloaded(response).decode("utf-8"))
    assert sorted(c["id"] for c in data) == sorted(str(c.pk) for c in selected)

    down = next(c for c in data if c["id"] == str(agent_conv.pk))
    assert down["site"] == "Shop" and down["language"] == "en" and down["status"] == "bot"
    assert [m["text"] for m in down["messages"]] == [
        "my parcel is late",
        "It is on its way.",
        "Please wait.",
        "I checked: it arrives tomorrow.",
    ]
    assert [m["id"] for m in down["messages"]] == sorted(m["id"] for m in down["messages"])
    assert [m["feedback"] for m in down["messages"]] == [
        None,
        {"rating": "down", "comment": ""},
        {"rating": "down", "comment": ""},
        None,
    ]
    assert [m["author"] for m in down["messages"]] == [None, None, None, admin_user.username]

    chinese = next(c for c in data if c["id"] == str(review_data["chinese"].pk))
    assert chinese["csat_score"] == 5
    assert chinese["messages"][0]["text"] == "你好，我的订单在哪里？"


@STREAMED
def test_csv_export_one_row_per_message_safe_for_spreadsheets(admin_client):
    risky = conversation(language="en", region='=HYPERLINK("http://evil")')
    message(risky, "customer", "=1+1")
    message(risky, "bot", "-5 is negative", is_fallback=True)
    chinese = conversation(language="zh-CN")
    message(chinese, "customer", "你好，我的订单在哪里？")
    unselected = conversation()
    message(unselected, "customer", "not exported")

    response = export(admin_client, "export_csv", [risky, chinese])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert re.fullmatch(r"transcripts-\d{8}-\d{6}\.csv", disposition_filename(response))
    body = downloaded(response)
    assert body.startswith(b"\xef\xbb\xbf")

    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert len(rows) == 3
    assert [r["message_text"] for r in rows] == [
        "'=1+1",
        "'-5 is negative",
        "你好，我的订单在哪里？",
    ]
    assert [r["conversation_id"] for r in rows] == [str(risky.pk)] * 2 + [str(chinese.pk)]
    assert rows[0]["conversation_region"] == '\'=HYPERLINK("http://evil")'
    assert rows[1]["message_is_fallback"] == "True"
    assert rows[2]["conversation_language"] == "zh-CN"


@STREAMED
@pytest.mark.parametrize("count", [1, 60])
def test_exports_stream_in_batches_and_stay_valid(admin_client, monkeypatch, count):
    from chat.admin import downloads

    monkeypatch.setattr(downloads, "EXPORT_BATCH_CHARS", 2000)  # a few conversations a batch
    selected = [conversation(language="en") for _ in range(count)]
    texts = [f'question {n}, "quoted"\nover two lines' for n in range(count)]
    for conv, text in zip(selected, texts, strict=True):
        message(conv, "customer", text)

    batches = list(export(admin_client, "export_json", selected))
    data = json.loads(b"".join(batches).decode("utf-8"))
    assert [c["messages"][0]["text"] for c in data] == texts
    # Sent as it is read, ~2,000 characters at a time, never the whole export at once.
    assert len(batches) == 1 if count == 1 else len(batches) > 10

    batches = list(export(admin_client, "export_csv", selected))
    rows = list(csv.DictReader(io.StringIO(b"".join(batches).decode("utf-8-sig"))))
    assert [r["message_text"] for r in rows] == texts
    assert len(batches) == 1 if count == 1 else len(batches) > 3

    # The fine-tuning export streams the same way (tests/console/test_finetune.py reads its lines).
    response = export(admin_client, "export_finetune", selected)
    with zipfile.ZipFile(io.BytesIO(downloaded(response))) as archive:  # no rated answers
        assert {
            name: archive.read(name) for name in archive.namelist() if name.endswith(".jsonl")
        } == dict.fromkeys(("train.jsonl", "valid.jsonl", "pairs.jsonl"), b"")


def test_json_export_of_nothing_is_an_empty_list():
    from chat import exports

    assert json.loads("".join(exports.transcripts_json(Conversation.objects.none()))) == []


def test_ticket_admin_signs_a_new_note_with_the_logged_in_user(admin_client, admin_user):
    other = get_user_model().objects.create_user("agent", password="x", is_staff=True)
    ticket = Ticket.objects.create(subject="Late parcel", assignee=other)
    TicketNote.objects.create(ticket=ticket, author=other, text="Called the courier.")
    response = admin_client.post(
        reverse("admin:agents_ticket_change", args=[ticket.pk]),
        {
            "subject": "Late parcel",
            "status": "solved",
            "priority": "high",
            "assignee": str(other.pk),
            "conversation": "",
            "notes-TOTAL_FORMS": "2",
            "notes-INITIAL_FORMS": "1",
            "notes-MIN_NUM_FORMS": "0",
            "notes-MAX_NUM_FORMS": "1000",
            "notes-0-id": str(ticket.notes.get().pk),
            "notes-0-ticket": str(ticket.pk),
            "notes-1-text": "Refund approved.",
            "notes-1-ticket": str(ticket.pk),
        },
    )
    assert response.status_code == 302, response.context and response.context.get("errors")
    notes = list(ticket.notes.order_by("id").values_list("text", "author"))
    assert notes == [("Called the courier.", other.pk), ("Refund approved.", admin_user.pk)]
    ticket.refresh_from_db()
    assert ticket.status == "solved" and ticket.solved_at is not None


def test_ticket_changelist_search_and_link(admin_client):
    conv = conversation()
    ticket = Ticket.objects.create(subject="Parcel", conversation=conv)
    TicketNote.objects.create(ticket=ticket, text="courier lost it")
    TicketNote.objects.create(ticket=ticket, text="courier found it")
    Ticket.objects.create(subject="Invoice")
    response = admin_client.get("/admin/agents/ticket/?q=courier")
    assert [t.pk for t in response.context["cl"].result_list] == [ticket.pk]
    assert reverse("admin:chat_conversation_change", args=[conv.pk]) in response.content.decode()


def test_canned_reply_created_by_the_logged_in_user(admin_client, admin_user):
    response = admin_client.post(
        "/admin/agents/cannedreply/add/",
        {
            "shortcut": "hello",
            "title": "Greeting",
            "text": "Hi {customer_name}!",
        },
    )
    assert response.status_code == 302
    assert CannedReply.objects.get(shortcut="hello").created_by == admin_user


@pytest.mark.parametrize(
    "url",
    [
        CHANGELIST,
        "/admin/agents/ticket/",
        "/admin/agents/cannedreply/",
        "/admin/chat/feedback/",
    ],
)
def test_non_staff_is_sent_to_the_admin_login(client, url):
    user = get_user_model().objects.create_user("customer", password="x", is_staff=False)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_non_staff_cannot_export(client):
    user = get_user_model().objects.create_user("customer", password="x", is_staff=False)
    client.force_login(user)
    conv = conversation()
    message(conv, "customer", "secret")
    response = export(client, "export_json", [conv])
    assert response.status_code == 302
    assert b"secret" not in response.content


def test_date_hierarchy_narrows_by_day(admin_client):
    old = conversation()
    Conversation.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=40))
    new = conversation()
    today = timezone.localdate()
    query = f"?created_at__year={today.year}&created_at__month={today.month}&created_at__day={today.day}"
    assert [c.pk for c in listed(admin_client, query)] == [new.pk]


def test_bot_profile_max_tokens_must_leave_the_prompt_room_in_the_context(admin_client, settings):
    settings.INFERENCE = {**settings.INFERENCE, "MAX_MODEL_LEN": 2048}
    add = "/admin/chat/botprofile/add/"
    form = bot_profile_form(name="Long answers", system_prompt="Be helpful.", max_tokens=4000)
    refused = admin_client.post(add, form)
    assert refused.status_code == 200
    (message,) = refused.context["adminform"].form.errors["max_tokens"]
    # Both numbers, the limit and what to do about it.
    for words in ("4000", "2048", "256", "at most 1792", "INFERENCE_MAX_MODEL_LEN"):
        assert words in message, message
    assert not BotProfile.objects.filter(name="Long answers").exists()

    assert admin_client.post(add, {**form, "max_tokens": 1792}).status_code == 302
    assert BotProfile.objects.get(name="Long answers").max_tokens == 1792

    settings.INFERENCE = {**settings.INFERENCE, "MAX_MODEL_LEN": 32768}  # a bigger context
    assert admin_client.post(add, {**form, "name": "Longer", "max_tokens": 8000}).status_code == 302
