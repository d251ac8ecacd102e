"""The record of calls: confirmation exactly once when requests race, cancelling, outcomes
written only onto confirmed calls, and only the declared arguments ever stored."""

import threading

import pytest
from django.db import connection

from chat.actions import selectors, services
from chat.actions.models import ActionCall
from chat.actions.outcome import Outcome
from chat.models import Conversation
from tests.actions.helpers import make_action

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation() -> Conversation:
    return Conversation.objects.create(token_hash="x" * 64)


@pytest.fixture
def waiting_call(conversation) -> ActionCall:
    action = services.action_save(action=make_action(name="cancel_order", confirm=True))
    return services.call_record(
        conversation_id=conversation.pk, action=action, arguments={"order_id": "A1002"}
    )


def test_a_write_waits_for_confirmation_with_its_declared_arguments_only(conversation):
    action = services.action_save(action=make_action(headers={"Authorization": "Bearer ${T}"}))
    call = services.call_record(
        conversation_id=conversation.pk,
        action=action,
        arguments={"order_id": "A1002", "customer": "someone-else", "token": "s3cret"},
    )
    stored = ActionCall.objects.get(pk=call.pk)
    assert stored.status == ActionCall.Status.CONFIRM_REQUIRED
    assert stored.arguments == {"order_id": "A1002"}
    assert stored.action_name == "order_status"


def test_two_racing_confirmations_let_exactly_one_call(waiting_call, conversation):
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def confirm():
        try:
            barrier.wait(5)
            results.append(
                services.call_confirm(call_id=waiting_call.pk, conversation_id=conversation.pk)
            )
        finally:
            connection.close()  # each thread's own connection

    threads = [threading.Thread(target=confirm) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [False, False, False, True]
    assert ActionCall.objects.get(pk=waiting_call.pk).status == ActionCall.Status.CONFIRMED


def test_a_cancelled_call_cannot_be_confirmed_and_the_reverse(waiting_call, conversation):
    ids = {"call_id": waiting_call.pk, "conversation_id": conversation.pk}
    assert services.call_cancel(**ids) is True
    assert services.call_cancel(**ids) is False
    assert services.call_confirm(**ids) is False
    assert ActionCall.objects.get(pk=waiting_call.pk).status == ActionCall.Status.CANCELLED


def test_another_conversation_cannot_confirm_a_call(waiting_call):
    other = Conversation.objects.create(token_hash="y" * 64)
    assert services.call_confirm(call_id=waiting_call.pk, conversation_id=other.pk) is False
    assert selectors.action_call(call_id=waiting_call.pk, conversation_id=other.pk) is None
    assert ActionCall.objects.get(pk=waiting_call.pk).status == ActionCall.Status.CONFIRM_REQUIRED


def test_an_outcome_is_written_only_onto_a_confirmed_call(waiting_call, conversation):
    done = Outcome(
        status="ok", http_status=200, latency_ms=42, fields={"order_id": "A1002"}, text="Done."
    )
    assert services.call_finish(call_id=waiting_call.pk, outcome=done) is False  # not confirmed
    services.call_confirm(call_id=waiting_call.pk, conversation_id=conversation.pk)
    assert services.call_finish(call_id=waiting_call.pk, outcome=done) is True
    assert services.call_finish(call_id=waiting_call.pk, outcome=done) is False  # once
    stored = ActionCall.objects.get(pk=waiting_call.pk)
    assert (stored.status, stored.http_status, stored.latency_ms, stored.text) == (
        "ok",
        200,
        42,
        "Done.",
    )
    assert stored.fields == {"order_id": "A1002"}


def test_a_call_made_at_once_is_recorded_with_its_outcome(conversation):
    action = services.action_save(action=make_action())
    failed = Outcome(status="refused", reason="invalid_arguments", detail="order_id: bad")
    call = services.call_record(
        conversation_id=conversation.pk, action=action, arguments={"order_id": "x"}, outcome=failed
    )
    assert (call.status, call.reason, call.detail) == (
        "refused",
        "invalid_arguments",
        "order_id: bad",
    )
    assert selectors.conversation_calls(conversation_id=conversation.pk) == [call]


def test_deleting_an_action_keeps_its_calls_on_the_transcript(waiting_call):
    services.action_delete(action=waiting_call.action)
    stored = ActionCall.objects.get(pk=waiting_call.pk)
    assert (stored.action_id, stored.action_name) == (None, "cancel_order")
