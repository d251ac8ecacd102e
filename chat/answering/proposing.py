"""Calls the model proposes: the conversation's actions offered to the model as tools, when no
trigger picked one, and the product's decision on each call the model writes. A part of
AnswerRun (chat/answering/run.py), beside acting.py (the calls triggers pick).

Offered only where they can apply: the customer channels' answers of a conversation that may
use at least one action (`verified` ones only while the customer is verified, `public` ones for
anyone). Every other answer is asked exactly as before, with no tools, so its prompt, and the
prefix cache holding it, do not change.

- "required" (ACTIONS_MODEL_CALLS "sure", the default, and "auto"): a call is certain to be
  wanted: the question is about the customer's own order without its number
  (chat.guards.needs_order_details) and a look-up needs no detail from them. Structured outputs
  (inference_worker/tool_grammar.py) then make a small model's output a valid call. Only
  look-ups that need no argument are offered so: a forced model would make up an order number,
  and a forced write would ask the customer to confirm what they never asked;
- "auto" (ACTIONS_MODEL_CALLS "auto", for a model that calls reliably): otherwise every usable
  action, the model deciding; the worker's hold (inference_worker/tool_calls.py) keeps call
  text from the stream, and text that speaks of the functions instead of calling them is
  asked again without tools (names_a_tool).

The model only proposes. The product checks each call again (an action this conversation may
use now, arguments valid by the schema, the limits), injects the verified customer's id itself
(an argument the schema does not declare, such as a `customer_id` the model writes, is dropped),
and then takes the path a trigger's call takes (acting.py): a look-up is called, shown as an
`action` frame, recorded, and its result goes into the system prompt of a second request, asked
without tools, whose answer replaces the message's text; a write asks the customer to confirm;
a call that failed gets the honest sentence and a human. A call the product refuses (unknown,
not allowed, bad arguments) is recorded for staff as `refused` and never shown: the answer is
asked again without tools, so no call text ever reaches the customer.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from channels.exceptions import ChannelFull
from django.conf import settings
from redis.exceptions import RedisError

from chat import fallback, guards, metrics, selectors
from chat.actions import schema, tools
from chat.actions import selectors as action_selectors
from chat.actions import services as action_services
from chat.actions.models import Action, ActionCall
from chat.actions.outcome import Outcome, refused
from chat.answering.acting import call_frame, results_for_the_model
from chat.answering.answer import Answer
from chat.answering.guarding import joined
from chat.answering.prompt import ToolOffer
from chat.punctuation import FullwidthPunctuation
from inference_worker import protocol
from runtime.aio import db

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError)
MODEL = ActionCall.ProposedBy.MODEL
SURE, AUTO = "sure", "auto"
# A call as JSON with no <tool_call> tags around it, as a small model sometimes writes one.
_BARE_CALL = re.compile(r'\{\s*"name"\s*:\s*"[^"]*"\s*,\s*"arguments"\s*:')


def tool_offer(actions: list[Action], *, question: str, mode: str) -> ToolOffer | None:
    """What the model is offered for this question, from the actions the conversation may use
    (see the module); None when nothing. `mode`: ACTIONS_MODEL_CALLS ("sure", "auto", "off")."""
    if not actions or mode not in (SURE, AUTO):
        return None
    no_details = [a for a in actions if not a.confirm and not schema.required_names(a.parameters)]
    if no_details and guards.needs_order_details(question):
        return ToolOffer(
            tools=tuple(tools.tool_definitions(no_details)), choice="required", parallel_calls=False
        )
    if mode == AUTO:
        return ToolOffer(tools=tuple(tools.tool_definitions(actions)), choice="auto")
    return None


def names_a_tool(text: str, offered: ToolOffer) -> bool:
    """Text that speaks of the functions instead of calling them ("call the `latest_order`
    function", or a call written without its tags): never the customer's to read. A name
    that is also a plain word ("refund") counts only written as code: `refund`, refund()."""
    return bool(_BARE_CALL.search(text)) or any(
        _named(tool["function"]["name"]).search(text) for tool in offered.tools
    )


def _named(name: str) -> re.Pattern:
    quoted = rf"`{re.escape(name)}`|\b{re.escape(name)}\s*\("
    return re.compile(rf"{quoted}|\b{re.escape(name)}\b" if "_" in name else quoted)


def _arguments(call: protocol.ToolCall) -> object:
    try:
        return json.loads(call["function"].get("arguments") or "{}")
    except (TypeError, ValueError):
        return None


class CallProposals:
    """AnswerRun's tool offer and the model's proposed calls (`self` is the run)."""

    async def _offer_actions(self, answer: Answer, actions: list[Action]) -> None:
        """Offer the actions this customer may use to the model (answer.offered), when no
        trigger picked one. `actions`: the site's, verified ones included."""
        customer = await db(selectors.verified_customer)(conversation_id=self.cid)
        usable = [
            a for a in actions if customer is not None or a.audience == Action.Audience.PUBLIC
        ]
        answer.offered = tool_offer(
            usable, question=answer.question.text, mode=settings.ACTIONS["MODEL_CALLS"]
        )

    async def _on_proposed_calls(self, answer: Answer, event: dict) -> None:
        """The model answered with calls (or with output written as a call that is none)."""
        offered = {tool["function"]["name"] for tool in answer.offered.tools}
        answer.offered = None  # whatever is asked from here on is asked without tools
        answer.call_tokens = (
            int(event.get("prompt_tokens") or 0),
            int(event.get("completion_tokens") or 0),
        )
        proposed = event.get("tool_calls") or []
        if not proposed:
            log.info(
                "answer %s: the model wrote of its tools without a valid call (%s); "
                "asked again without tools",
                answer.request_id,
                event.get("invalid_tool_call") or "named a function",
            )
            await self._ask_without_tools(answer)
            return
        customer = await db(selectors.verified_customer)(conversation_id=self.cid)
        site_id = self.conversation.site_id
        allowed = {
            a.name: a
            for a in await db(action_selectors.actions_for)(
                site_id=site_id, verified=customer is not None
            )
            if a.name in offered
        }
        valid: list[tuple[Action, dict]] = []
        for call in proposed:
            action, arguments = await self._vet(call, allowed, site_id)
            if action is not None and (action, arguments) not in valid:  # the same call once
                valid.append((action, arguments))
        # A write wins, as with triggers: the customer is asked before anything is called.
        write = next(((a, args) for a, args in valid if a.confirm), None)
        if write is not None:
            await self._confirm_proposed(answer, *write)
            return
        if not valid:
            await self._ask_without_tools(answer)
            return
        language = self.conversation.language
        answered, failed = await self._make_calls(
            answer, valid, customer=customer, proposed_by=MODEL
        )
        if answered:
            answer.action_results = results_for_the_model(answered)
            answer.action_texts = [outcome.text for _, outcome in answered]
            answer.ask_details = False  # the order was found: its number is known
            system, *turns = answer.prompt
            answer.prompt = [
                {**system, "content": f"{system['content']}\n\n{answer.action_results}"},
                *turns,
            ]
            await self._ask_without_tools(answer)
            return
        text = joined(
            failed[0][1].customer_text(language),
            guards.text("offer_human", language),
            language=language,
        )
        answer.offer_human = True
        await self._end_in_own_words(answer, text, guards.ACTION_FAILED)

    async def _vet(
        self, call: protocol.ToolCall, allowed: dict[str, Action], site_id
    ) -> tuple[Action | None, dict]:
        """The action and validated arguments of one proposed call; (None, {}) for a call the
        product refuses, recorded as refused when it names an action at all."""
        name = call["function"]["name"]
        arguments = _arguments(call)
        action = allowed.get(name)
        problem: Outcome | None = None
        if action is None:
            # Not offered, or no longer usable (turned off, the verification expired).
            action = await db(action_selectors.action_for)(
                site_id=site_id, name=name, verified=True
            )
            problem = refused("not_allowed", f"the model proposed {name[:64]}, not offered now")
        else:
            kept, problems = schema.validated(action.parameters, arguments)
            if problems:
                problem = refused("invalid_arguments", "; ".join(problems))
            else:
                return action, kept
        log.info(
            "conversation %s: proposed call of %s refused (%s)", self.cid, name[:64], problem.reason
        )
        if action is not None:
            metrics.action_called(action.name, problem.status, None)
            await db(action_services.call_record)(
                conversation_id=self.cid,
                action=action,
                arguments=arguments if isinstance(arguments, dict) else {},
                outcome=problem,
                proposed_by=MODEL,
            )
        return None, {}

    async def _confirm_proposed(self, answer: Answer, action: Action, arguments: dict) -> None:
        """A write the model proposed: recorded as waiting, and the customer asked."""
        call = await db(action_services.call_record)(
            conversation_id=self.cid, action=action, arguments=arguments, proposed_by=MODEL
        )
        answer.calls.append(call.pk)
        frame = call_frame(call, language=self.conversation.language)
        await self._emit(frame)
        await self._end_in_own_words(answer, frame["confirm_text"], guards.CONFIRM)

    async def _end_in_own_words(self, answer: Answer, text: str, guard: str) -> None:
        """The message the model's call began ends with the product's words."""
        answer.punctuation = None  # the product's own text, as written
        await self._replace_text(answer, text)
        answer.guards.append(guard)
        metrics.guarded(guard)
        metrics.answer_ended(metrics.GUARDED, guard)
        await self._finish(
            answer,
            finish_reason=guard,
            partial=False,
            prompt_tokens=answer.call_tokens[0],
            completion_tokens=answer.call_tokens[1],
        )

    async def _ask_without_tools(self, answer: Answer) -> None:
        """The answer asked again, with its prompt as it stands and no tools: its text
        replaces what the message showed (the text before a call, if any)."""
        answer.request_id = uuid.uuid4().hex
        answer.started_at = None
        answer.next_presence_check = time.monotonic() + settings.INFERENCE["WORKER_TTL_SECONDS"] / 2
        answer.punctuation = FullwidthPunctuation() if answer.punctuation else None
        try:
            room, queue_limit = await self._room()
            if room.live == 0 or room.queued >= queue_limit:
                raise ChannelFull
            await self._replace_text(answer, "")
            await self._dispatch(answer, queue_limit)
        except (ChannelFull, *_REDIS_ERRORS) as exc:
            log.warning("could not ask again for %s (%s)", self.cid, exc.__class__.__name__)
            await self._give_up(fallback.REASON_BUSY)
