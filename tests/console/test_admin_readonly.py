"""Transcripts are read-only in the admin, and what admin still changes is on record.

Conversations change through `agents.services` (from the console), which sends the events live
views wait for and clears the recent-turn cache; an admin form would do neither. The admin
keeps reading, filtering and exporting them, and lists every change it makes elsewhere."""

import json

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.forms.models import model_to_dict
from django.urls import reverse

from chat.api import keys
from chat.knowledge import services as knowledge_services
from chat.knowledge.models import Article
from chat.models import ApiKey, BotProfile, Conversation, Feedback, Message, Site
from tests.console.admin_helpers import (
    STREAMED,
    bot_profile_form,
    conversation,
    downloaded,
    message,
)

pytestmark = pytest.mark.django_db

LOG = "/admin/admin/logentry/"


@pytest.fixture
def transcript(admin_user) -> dict:
    conv = conversation(language="en", customer_name="Ada", customer_email="ada@example.com")
    question = message(conv, "customer", "Where is my parcel?")
    answer = message(conv, "bot", "It left today.", finish_reason="stop", completion_tokens=4)
    feedback = Feedback.objects.create(
        message=answer, rating=Feedback.Rating.DOWN, comment="too vague"
    )
    return {"conversation": conv, "question": question, "answer": answer, "feedback": feedback}


def stored(obj) -> dict:
    """Every column of the row as the database has it now."""
    return model_to_dict(
        type(obj).objects.get(pk=obj.pk), fields=[f.name for f in type(obj)._meta.concrete_fields]
    )


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def action_choices(response) -> set[str]:
    """The actions a changelist offers (no action form at all when it offers none)."""
    assert response.status_code == 200
    form = response.context["action_form"]
    return set() if form is None else {value for value, _ in form.fields["action"].choices}


# --- transcripts: nothing changes them from admin ---------------------------------------------


def test_conversation_fields_cannot_be_changed(admin_client, admin_user, transcript):
    conv, question = transcript["conversation"], transcript["question"]
    before = stored(conv)
    # A complete, valid form: the admin as it was saved it, status, assignee and all.
    response = admin_client.post(
        url("chat_conversation_change", conv.pk),
        {
            "status": Conversation.Status.HUMAN,
            "assigned_agent": str(admin_user.pk),
            "language": "fr",
            "region": "",
            "timezone": "",
            "bot_profile": "",
            "site": "",
            "customer_name": "Mallory",
            "customer_email": "mallory@example.com",
            "messages-TOTAL_FORMS": "2",
            "messages-INITIAL_FORMS": "2",
            "messages-MIN_NUM_FORMS": "0",
            "messages-MAX_NUM_FORMS": "1000",
            "messages-0-id": str(question.pk),
            "messages-0-conversation": str(conv.pk),
            "messages-1-id": str(transcript["answer"].pk),
            "messages-1-conversation": str(conv.pk),
        },
    )
    assert response.status_code == 403
    assert stored(conv) == before
    assert not LogEntry.objects.exists()


def test_message_text_and_role_cannot_be_changed(admin_client, admin_user, transcript):
    answer = transcript["answer"]
    before = stored(answer)
    response = admin_client.post(
        url("chat_message_change", answer.pk),
        {
            "conversation": str(answer.conversation_id),
            "role": Message.Role.AGENT,
            "text": "Rewritten after the fact.",
            "author": str(admin_user.pk),
            "finish_reason": "length",
            "completion_tokens": "999",
        },
    )
    assert response.status_code == 403
    assert stored(answer) == before


def test_feedback_cannot_be_changed(admin_client, transcript):
    feedback = transcript["feedback"]
    before = stored(feedback)
    response = admin_client.post(
        url("chat_feedback_change", feedback.pk),
        {
            "message": str(feedback.message_id),
            "rating": Feedback.Rating.UP,
            "comment": "",
        },
    )
    assert response.status_code == 403
    assert stored(feedback) == before


@pytest.mark.parametrize("model", ["conversation", "message", "feedback"])
def test_nothing_of_a_transcript_is_added_in_admin(admin_client, transcript, model):
    assert admin_client.get(url(f"chat_{model}_add")).status_code == 403
    before = Conversation.objects.count(), Message.objects.count(), Feedback.objects.count()
    response = admin_client.post(
        url(f"chat_{model}_add"),
        {
            "conversation": str(transcript["conversation"].pk),
            "role": "bot",
            "text": "Invented.",
            "message": str(transcript["question"].pk),
            "rating": "up",
            "status": "bot",
        },
    )
    assert response.status_code == 403
    assert (
        Conversation.objects.count(),
        Message.objects.count(),
        Feedback.objects.count(),
    ) == before


def test_a_site_with_transcripts_is_deactivated_not_deleted(admin_client, transcript):
    """Deleting it would have left its transcripts without their site (resumable without a
    site key); admin refuses. A site nobody has chatted on yet can go."""
    shop = Site.objects.create(name="Shop", allowed_origins="https://shop.example")
    conv = transcript["conversation"]
    Conversation.objects.filter(pk=conv.pk).update(site=shop)
    refused = admin_client.post(url("chat_site_delete", shop.pk), {"post": "yes"})
    assert refused.status_code == 200  # the confirmation page again, with the reason
    assert "Cannot delete site" in refused.content.decode()
    assert Conversation.objects.get(pk=conv.pk).site_id == shop.pk
    unused = Site.objects.create(name="Unused", allowed_origins="https://unused.example")
    gone = admin_client.post(url("chat_site_delete", unused.pk), {"post": "yes"})
    assert gone.status_code == 302 and not Site.objects.filter(pk=unused.pk).exists()


@pytest.mark.parametrize(
    "model, key",
    [
        ("conversation", "conversation"),
        ("message", "question"),
        ("feedback", "feedback"),
    ],
)
def test_no_single_delete(admin_client, transcript, model, key):
    obj = transcript[key]
    delete = url(f"chat_{model}_delete", obj.pk)
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()
    assert Message.objects.count() == 2 and Feedback.objects.count() == 1


@pytest.mark.parametrize(
    "model, key",
    [
        ("conversation", "conversation"),
        ("message", "question"),
        ("feedback", "feedback"),
    ],
)
def test_no_bulk_delete(admin_client, transcript, model, key):
    obj = transcript[key]
    changelist = url(f"chat_{model}_changelist")
    assert "delete_selected" not in action_choices(admin_client.get(changelist))
    admin_client.post(
        changelist,
        {
            "action": "delete_selected",
            "_selected_action": [str(obj.pk)],
            "post": "yes",
        },
    )
    assert type(obj).objects.filter(pk=obj.pk).exists()
    assert Message.objects.count() == 2 and Feedback.objects.count() == 1


def test_conversation_page_shows_the_transcript_and_points_to_the_console(admin_client, transcript):
    conv = transcript["conversation"]
    response = admin_client.get(url("chat_conversation_change", conv.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Where is my parcel?" in html and "It left today." in html
    assert "too vague" in html  # the customer's rating, with the answer it rates
    assert "ada@example.com" in html
    # Read-only: no form field for the status, nothing to save.
    assert 'name="status"' not in html and 'name="_save"' not in html
    console = reverse("agents:conversation", args=[conv.pk])
    assert f'href="{console}"' in html and "agent console" in html


@pytest.mark.parametrize("model, key", [("message", "answer"), ("feedback", "feedback")])
def test_message_and_feedback_pages_open_read_only(admin_client, transcript, model, key):
    response = admin_client.get(url(f"chat_{model}_change", transcript[key].pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="text"' not in html and 'name="rating"' not in html
    assert 'name="_save"' not in html
    console = reverse("agents:conversation", args=[transcript["conversation"].pk])
    assert f'href="{console}"' in html


@pytest.mark.parametrize(
    "changelist, query",
    [
        ("chat_conversation_changelist", "?rating=down"),
        ("chat_conversation_changelist", "?q=parcel"),
        ("chat_message_changelist", "?role__exact=bot"),
        ("chat_message_changelist", "?q=parcel"),
        ("chat_feedback_changelist", "?rating__exact=down"),
    ],
)
def test_review_lists_filters_and_search_still_work(admin_client, transcript, changelist, query):
    response = admin_client.get(url(changelist) + query)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1


@STREAMED
def test_read_only_exports_still_work(admin_client, transcript):
    conv = transcript["conversation"]
    changelist = url("chat_conversation_changelist")
    offered = action_choices(admin_client.get(changelist))
    assert {"export_json", "export_csv", "export_finetune"} <= offered

    response = admin_client.post(
        changelist, {"action": "export_json", "_selected_action": [str(conv.pk)]}
    )
    assert response.status_code == 200
    [exported] = json.loads(downloaded(response).decode())
    assert [m["text"] for m in exported["messages"]] == ["Where is my parcel?", "It left today."]

    response = admin_client.post(
        changelist, {"action": "export_finetune", "_selected_action": [str(conv.pk)]}
    )
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert not LogEntry.objects.exists()  # reading is not a change


# --- the record of changes admin still makes ---------------------------------------------------


def log_rows(client, query: str = "") -> list[LogEntry]:
    response = client.get(LOG + query)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_bot_profile_change_is_logged_and_listed(admin_client, admin_user):
    profile = BotProfile.objects.create(name="Default", system_prompt="Be brief.")
    form = {**bot_profile_form(name="Default", system_prompt="Be brief."), "temperature": 0.2}
    response = admin_client.post(url("chat_botprofile_change", profile.pk), form)
    assert response.status_code == 302, response.context and response.context.get("errors")

    entry = LogEntry.objects.get()
    assert (entry.user, entry.action_flag, entry.object_id) == (admin_user, CHANGE, str(profile.pk))
    assert entry.content_type == ContentType.objects.get_for_model(BotProfile)
    assert "Temperature" in entry.get_change_message()

    assert log_rows(admin_client) == [entry]
    page = admin_client.get(LOG).content.decode()
    assert admin_user.username in page and "Default" in page
    assert url("chat_botprofile_change", profile.pk) in page  # links to what changed


def test_revoke_action_is_logged_per_key_it_revoked(admin_client, admin_user):
    first, _ = keys.create_api_key(name="a", scopes=["chat"])
    already, _ = keys.create_api_key(name="b", scopes=["chat"])
    keys.revoke_api_key(already)
    kept, _ = keys.create_api_key(name="c", scopes=["chat"])
    response = admin_client.post(
        url("chat_apikey_changelist"),
        {"action": "revoke", "_selected_action": [first.pk, already.pk]},
    )
    assert response.status_code == 302

    [entry] = LogEntry.objects.all()
    assert (entry.user, entry.action_flag, entry.object_id) == (admin_user, CHANGE, str(first.pk))
    assert entry.content_type == ContentType.objects.get_for_model(ApiKey)
    assert "Revoked" in entry.get_change_message()
    assert log_rows(admin_client) == [entry]
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None


def test_publish_actions_are_logged(admin_client, admin_user):
    draft = knowledge_services.article_create(title="Returns", body="Thirty days.", published=False)
    live = knowledge_services.article_create(title="Shipping", body="By boat.", published=True)
    changelist = url("chat_article_changelist")
    selected = [draft.pk, live.pk]
    assert (
        admin_client.post(
            changelist, {"action": "publish", "_selected_action": selected}
        ).status_code
        == 302
    )
    # Only the article that was withdrawn is on record as published.
    [published] = LogEntry.objects.all()
    assert (published.object_id, published.user) == (str(draft.pk), admin_user)
    assert "Published" in published.get_change_message()

    assert (
        admin_client.post(
            changelist, {"action": "unpublish", "_selected_action": selected}
        ).status_code
        == 302
    )
    withdrawn = LogEntry.objects.exclude(pk=published.pk)
    assert sorted(int(e.object_id) for e in withdrawn) == sorted(selected)
    assert all("Withdrawn" in e.get_change_message() for e in withdrawn)
    assert not Article.objects.filter(published=True).exists()


def test_log_admin_filters_by_user_content_type_and_action(admin_client, admin_user):
    other = get_user_model().objects.create_user("agent", password="x", is_staff=True)
    profile = BotProfile.objects.create(name="Default")
    bot_type = ContentType.objects.get_for_model(BotProfile)
    key_type = ContentType.objects.get_for_model(ApiKey)

    def log(user, content_type, flag) -> LogEntry:
        return LogEntry.objects.create(
            user=user,
            content_type=content_type,
            object_id=str(profile.pk),
            object_repr="Default",
            action_flag=flag,
            change_message="",
        )

    mine = log(admin_user, bot_type, CHANGE)
    theirs = log(other, bot_type, ADDITION)
    deleted_key = log(other, key_type, DELETION)
    assert {e.pk for e in log_rows(admin_client)} == {mine.pk, theirs.pk, deleted_key.pk}
    assert log_rows(admin_client, f"?user__id__exact={other.pk}") == [deleted_key, theirs]
    assert log_rows(admin_client, f"?content_type__id__exact={key_type.pk}") == [deleted_key]
    assert log_rows(admin_client, f"?action_flag__exact={ADDITION}") == [theirs]


def test_log_admin_refuses_add_change_and_delete(admin_client, admin_user):
    profile = BotProfile.objects.create(name="Default")
    entry = LogEntry.objects.create(
        user=admin_user,
        content_type=ContentType.objects.get_for_model(BotProfile),
        object_id=str(profile.pk),
        object_repr="Default",
        action_flag=CHANGE,
        change_message="Changed the prompt.",
    )
    before = stored(entry)

    assert admin_client.get(LOG + "add/").status_code == 403
    assert admin_client.post(LOG + "add/", {"action_flag": ADDITION}).status_code == 403
    change = LOG + f"{entry.pk}/change/"
    page = admin_client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert (
        admin_client.post(
            change, {"change_message": "Nothing happened.", "action_flag": DELETION}
        ).status_code
        == 403
    )
    delete = LOG + f"{entry.pk}/delete/"
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert "delete_selected" not in action_choices(admin_client.get(LOG))
    admin_client.post(
        LOG, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    assert stored(entry) == before
