"""Actions in an answer: the company's back end called for the customer (chat/actions), before
the model answers, and the customer's confirmation of an action that changes something.

A question whose words match an action's trigger ("Where is my order A1001?") gets the call
made by the product, never by the model's choice: the action is one the conversation may use
(a `verified` one only for a customer the company vouches for now, chat.selectors.
verified_customer), its arguments come from the trigger, and the customer's id from the
verification, never from the words. Then:

- a call that answered: its result goes into the prompt, and the model answers from it;
- a call that failed (the back end down, slow, refusing; a limit): the product says so in one
  honest sentence and offers a human, without the model;
- an action that changes something (`confirm`): nothing is called; the customer is asked, in
  the product's words, and the call waits for `action.confirm` (confirm_call, exactly once).

Every call is an `action` frame to the answer's audience (widget card, console) and an
ActionCall on the conversation's record.
"""

from __future__ import annotations

import contextlib
import logging

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from chat import frames, group_events, guards, memory, selectors
from chat.actions import calling, limits, schema, texts, triggers
from chat.actions import selectors as action_selectors
from chat.actions import services as action_services
from chat.actions.models import Action, ActionCall
from chat.actions.outcome import Outcome, refused
from chat.answering.answer import Answer
from chat.answering.guarding import joined
from runtime.aio import db

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError)


def label(action_name: str) -> str:
    """What a card calls the action: "order_status" → "Order status"."""
    return action_name.replace("_", " ").strip().capitalize()


def call_frame(call: ActionCall, *, language: str, confirm_text: str = "") -> dict:
    """The call as the widget and the console show it: a failure's text is the customer's
    honest sentence; a call still waiting says what it will do (from its action, when
    `confirm_text` is not given)."""
    if call.status == ActionCall.Status.CONFIRM_REQUIRED and not confirm_text and call.action:
        confirm_text = texts.confirmation(
            confirm_text=call.action.confirm_text,
            description=call.action.description,
            arguments=call.arguments,
            language=language,
        )
    failed = call.status in ActionCall.FAILED
    return frames.action_frame(
        call_id=call.pk,
        name=call.action_name,
        label=label(call.action_name),
        status=call.status,
        text=texts.failure(status=call.status, reason=call.reason, language=language)
        if failed
        else call.text,
        fields=call.fields,
        arguments=call.arguments,
        latency_ms=call.latency_ms,
        confirm_text=confirm_text,
    )


def results_for_the_model(outcomes: list[tuple[Action, Outcome]]) -> str:
    """The calls' results, as the system prompt's last part: what the model answers from."""
    lines = "\n".join(f"- {outcome.text}" for _, outcome in outcomes)
    return (
        "Looked up just now in our systems for this customer (answer from this; say nothing "
        f"about the order that it does not say):\n{lines}"
    )


class ActionTaking:
    """AnswerRun's actions (`self` is the run)."""

    async def _take_actions(
        self, answer: Answer, turns: list[dict], actions: list[Action] | None = None
    ) -> bool:
        """Call the actions the question's words pick; True when the product answered itself
        (a confirmation to ask for, calls that all failed, or details or a sign-in it needs).
        `turns`: the conversation's recent turns, whose previous customer message may hold a
        parameter this one lacks. `actions`: the site's actions, if read already."""
        # Every action the site has first: with none configured, or none whose trigger the
        # words match (most questions), that is the one database read.
        if actions is None:
            actions = await db(action_selectors.actions_for)(
                site_id=self.conversation.site_id, verified=True
            )
        matches = triggers.matching_triggers(actions, answer.question.text) if actions else []
        if not matches:
            if actions and answer.tools is None:
                # No trigger picked one: the model may propose a call (proposing.py).
                await self._offer_actions(answer, actions)
            return False
        customer = await db(selectors.verified_customer)(conversation_id=self.cid)
        language = self.conversation.language
        if customer is None:  # a visitor nobody vouches for reaches the public ones only
            public = [(a, args) for a, args in matches if a.audience == Action.Audience.PUBLIC]
            if not public:
                # Their order named, and no way to it without knowing who they are.
                await self._guarded(
                    answer, guards.text(guards.SIGN_IN, language), (guards.SIGN_IN,)
                )
                return True
            matches = public
        earlier = memory.previous_customer_text(turns)
        complete = []
        for action, arguments in matches:
            arguments = triggers.fill_missing(action, arguments, earlier)
            if set(schema.required_names(action.parameters)) <= set(arguments):
                complete.append((action, arguments))
        if not complete:
            # The action is known, a detail is not (an order number without the e-mail
            # address it was placed with): the product asks for it.
            text = guards.text(guards.SIGN_IN if customer is None else guards.ASK_DETAILS, language)
            await self._guarded(answer, text, (guards.ASK_DETAILS,))
            return True
        matches = complete
        # "Cancel my order A1001" names the order the look-up's pattern also finds: what the
        # customer asks to change is the question, and the look-up waits for another.
        for action, arguments in matches:
            if action.confirm:
                await self._ask_to_confirm(answer, action, arguments)
                return True
        answered, failed = await self._make_calls(answer, matches, customer=customer)
        if answered:
            answer.action_results = results_for_the_model(answered)
            answer.action_texts = [outcome.text for _, outcome in answered]
            return False
        text = joined(
            failed[0][1].customer_text(language),
            guards.text("offer_human", language),
            language=language,
        )
        await self._guarded(answer, text, (guards.ACTION_FAILED,), offer_human=True)
        return True

    async def _make_calls(
        self,
        answer: Answer,
        calls: list[tuple[Action, dict]],
        *,
        customer,
        proposed_by: str = ActionCall.ProposedBy.TRIGGER,
    ) -> tuple[list[tuple[Action, Outcome]], list[tuple[Action, Outcome]]]:
        """Each call within the limits, for the verified customer (None: a visitor), recorded
        on the conversation and shown to the answer's audience. Returns those that answered
        and those that did not."""
        counted = limits.AnswerCalls()
        language = self.conversation.language
        answered: list[tuple[Action, Outcome]] = []
        failed: list[tuple[Action, Outcome]] = []
        for action, arguments in calls:
            outcome = await limits.check_call(
                action, conversation_id=self.cid, answer=counted
            ) or await calling.call(
                action,
                arguments,
                customer_id=customer.id if customer is not None else None,
                language=language,
            )
            call = await db(action_services.call_record)(
                conversation_id=self.cid,
                action=action,
                arguments=arguments,
                outcome=outcome,
                proposed_by=proposed_by,
            )
            answer.calls.append(call.pk)
            await self._emit(call_frame(call, language=language))
            (answered if outcome.ok else failed).append((action, outcome))
        return answered, failed

    async def _ask_to_confirm(self, answer: Answer, action: Action, arguments: dict) -> None:
        """An action that changes something: recorded as waiting, and the customer asked."""
        call = await db(action_services.call_record)(
            conversation_id=self.cid, action=action, arguments=arguments
        )
        answer.calls.append(call.pk)
        frame = call_frame(call, language=self.conversation.language)  # says what it will do
        await self._emit(frame)
        await self._guarded(answer, frame["confirm_text"], (guards.CONFIRM,))

    async def _attach_calls(self, answer: Answer) -> None:
        """The calls go on the record of the answer that made them."""
        message_id = (
            answer.message.pk
            if answer.message is not None
            else (answer.done_frame or {}).get("message_id")
        )
        if message_id is None:
            return
        for call_id in answer.calls:
            await db(action_services.call_attach_message)(call_id=call_id, message_id=message_id)


# --- the customer's answer to a confirmation ------------------------------------------------


async def confirm_call(conversation_id, call_id: int) -> dict | None:
    """The customer confirmed call `call_id` of this conversation: called now, exactly once
    however many tabs or resends confirm it. Returns the call's frame as it ends (or as it
    stands, for a confirmation that came second); None for no call of this conversation.
    Every socket of the conversation and every console watching it gets the frames."""
    call = await db(action_selectors.action_call)(call_id=call_id, conversation_id=conversation_id)
    if call is None:
        return None
    language = await db(selectors.conversation_language)(conversation_id=conversation_id)
    won = await db(action_services.call_confirm)(call_id=call_id, conversation_id=conversation_id)
    if not won:
        call = await db(action_selectors.action_call)(
            call_id=call_id, conversation_id=conversation_id
        )
        return call_frame(call, language=language)
    call.status = ActionCall.Status.CONFIRMED
    await _broadcast(conversation_id, call_frame(call, language=language))
    outcome = await _confirmed_outcome(conversation_id, call, language)
    await db(action_services.call_finish)(call_id=call_id, outcome=outcome)
    call = await db(action_selectors.action_call)(call_id=call_id, conversation_id=conversation_id)
    frame = call_frame(call, language=language)
    await _broadcast(conversation_id, frame)
    return frame


async def _confirmed_outcome(conversation_id, call: ActionCall, language: str) -> Outcome:
    """The call, made now for the customer verified now: a verification that expired since
    the question was asked calls nothing."""
    action = call.action
    if action is None or not action.enabled:
        return refused("disabled", "the action was removed or turned off")
    customer = await db(selectors.verified_customer)(conversation_id=conversation_id)
    allowed = await limits.check_call(
        action, conversation_id=conversation_id, answer=limits.AnswerCalls()
    )
    return allowed or await calling.call(
        action,
        call.arguments,
        customer_id=customer.id if customer is not None else None,
        language=language,
    )


async def cancel_call(conversation_id, call_id: int) -> dict | None:
    """The customer said no to call `call_id`: it is never made. Returns the call's frame
    (cancelled, or as it stands when it was confirmed first); None for no call of this
    conversation."""
    cancelled = await db(action_services.call_cancel)(
        call_id=call_id, conversation_id=conversation_id
    )
    call = await db(action_selectors.action_call)(call_id=call_id, conversation_id=conversation_id)
    if call is None:
        return None
    language = await db(selectors.conversation_language)(conversation_id=conversation_id)
    frame = call_frame(call, language=language)
    if cancelled:
        await _broadcast(conversation_id, frame)
    return frame


async def _broadcast(conversation_id, frame: dict) -> None:
    """A call's frame to every customer socket of the conversation and every console
    watching it, in any process."""
    layer = get_channel_layer()
    cid = str(conversation_id)
    with contextlib.suppress(ChannelFull, *_REDIS_ERRORS):
        await layer.group_send(
            group_events.conversation_group(cid),
            group_events.conv_action(conversation_id=cid, frame=frame),
        )
        await layer.group_send(
            group_events.watch_group(cid), group_events.conv_bot(conversation_id=cid, frame=frame)
        )
