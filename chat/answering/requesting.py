"""Asking the workers: the room they have, the prompt with the help-centre passages that answer
the question, and the request itself. A part of AnswerRun (chat/answering/run.py)."""

import asyncio
import logging
import time

from channels.exceptions import ChannelFull
from django.conf import settings
from redis.exceptions import RedisError

from chat import fallback, limits, memory
from chat.answering.answer import Answer
from chat.answering.prompt import (
    AnswerContext,
    AnswerOptions,
    PromptParts,
    ToolOffer,
    build_messages,
    prompt_parts,
)
from chat.knowledge import grounding
from chat.knowledge import retrieval as knowledge
from chat.models import Message
from chat.punctuation import FullwidthPunctuation
from inference_worker import pool, protocol  # pool: the workers' presence, our settings
from runtime.redis_client import get_redis

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError)


class RequestSending:
    """AnswerRun's requests to the workers (`self` is the run)."""

    async def _send_request(self, answer: Answer) -> bool:
        """Send the request to the workers; False if the fallback or a guard answered
        instead."""
        cfg, inference = settings.CHAT, settings.INFERENCE
        options = self.options.pop(answer.question.pk, None)
        context = self.contexts.pop(answer.question.pk, None)
        answer.guarded = options is None or options.guards
        answer.tools = options.tools if options is not None else None
        site = str(self.conversation.site_id or "")
        answer.slot = await limits.acquire_answer_slot(site_key=site)
        if answer.slot is None:
            log.warning(
                "site %s has SITE_CONCURRENT_ANSWERS answers streaming; %s gets the fallback",
                self.conversation.site_id,
                self.cid,
            )
            await self._fallback(answer, fallback.REASON_BUSY)
            return False
        try:
            room, queue_limit = await self._room()
            if room.live == 0:
                await self._fallback(answer, fallback.REASON_UNAVAILABLE)
                return False
            if room.queued >= queue_limit:
                raise ChannelFull  # full already: no need to build the request
            # Independent reads, at once: the prompt's parts (database, unless read with the
            # question), the passages that answer the question (a thread) and the recent
            # turns (Redis).
            parts, hits, turns = await asyncio.gather(
                self._prompt_parts(context, options),
                self._knowledge(answer.question.text),
                memory.recent_turns(self.cid, newest_id=answer.question.pk),
            )
            answer.asked = answer.question.text
            if len(turns) > 1 and (hits == [] or (hits and memory.is_follow_up(answer.asked))):
                asked, found = await self._follow_up_knowledge(answer.question, turns)
                if found or not hits:  # together they find nothing: what it found alone
                    answer.asked, hits = asked, found
            answer.punctuation = FullwidthPunctuation() if parts.fullwidth else None
            actions = context.actions if context is not None else None
            if answer.guarded and await self._take_actions(answer, turns, actions):
                return False
            # A call's result answers the question even where no help-centre article does;
            # so may the call the model must make (proposing.py).
            forced = answer.offered is not None and answer.offered.choice == "required"
            searched = (hits or None) if answer.action_results or forced else hits
            if answer.guarded and await self._guard_the_question(answer, parts, searched):
                return False
            if answer.action_results:
                answer.ask_details = False  # the order was found: its number is known
            answer.hits = hits or []
            answer.grounded = grounding.ground(
                parts.system_prompt,
                hits,
                offer_human_when_nothing=parts.offer_human_when_nothing,
                question=answer.asked,
            )
            system_prompt = answer.grounded.system_prompt
            if answer.action_results:
                system_prompt = f"{system_prompt}\n\n{answer.action_results}"
            answer.prompt = build_messages(system_prompt, turns)
            if answer.tools is not None:
                answer.prompt += answer.tools.exchange
            answer.sampling = parts.sampling
            answer.stream_guards = {
                "loops": True,
                "max_words": parts.max_words if answer.guarded else 0,
                "max_han": parts.max_han if answer.guarded else 0,
            }
            now = time.monotonic()
            answer.next_presence_check = now + inference["WORKER_TTL_SECONDS"] / 2
            self._next_tick = now + cfg["PARTIAL_SAVE_SECONDS"]
            answer.sent_at = answer.last_event_at = now
            await self._dispatch(answer, queue_limit)
        except ChannelFull:
            log.warning(
                "inference queue full (%d slots, %s s per answer lately); %s gets the fallback",
                room.slots,
                f"{room.turnover:.1f}" if room.turnover else "?",
                self.cid,
            )
            await self._fallback(answer, fallback.REASON_BUSY)
            return False
        except _REDIS_ERRORS as exc:
            # Redis is the transport to the workers: without it the model cannot answer,
            # but the question is stored and the fallback rules still can.
            log.warning("cannot reach the inference workers for %s (Redis: %s)", self.cid, exc)
            await self._fallback(answer, fallback.REASON_UNAVAILABLE)
            return False
        return True

    async def _prompt_parts(
        self, context: AnswerContext | None, options: AnswerOptions | None
    ) -> PromptParts:
        if context is not None:
            return context.parts
        return await prompt_parts(self.conversation, options)

    async def _room(self) -> tuple[pool.Capacity, int]:
        """The workers' room, and how many requests may wait for them."""
        cfg, inference = settings.CHAT, settings.INFERENCE
        room = await pool.capacity(get_redis(), inference["CHANNEL"])
        return room, room.queue_limit(
            queue_per_slot=inference["QUEUE_PER_SLOT"],
            first_token_timeout=cfg["FIRST_TOKEN_TIMEOUT_SECONDS"],
        )

    async def _dispatch(self, answer: Answer, queue_limit: int) -> None:
        """Send the answer's request (its prompt as it stands) to the workers."""
        cfg, wall = settings.CHAT, time.time()
        tools = answer.tools or answer.offered or ToolOffer()
        request = protocol.inference_request(
            request_id=answer.request_id,
            reply_channel=self.channel,
            messages=answer.prompt,
            sampling=answer.sampling,
            grounding=answer.grounded.grounding,
            deadline=wall + cfg["ANSWER_TIMEOUT_SECONDS"] - (time.monotonic() - answer.sent_at),
            queued_at=wall,
            start_by=wall + cfg["FIRST_TOKEN_TIMEOUT_SECONDS"],
            guards=answer.stream_guards,
            tools=list(tools.tools),
            tool_choice=tools.choice,
            parallel_tool_calls=tools.parallel_calls,
        )
        # Counted and queued in one atomic step: questions arriving together cannot all
        # slip in under the limit.
        await self.layer.send(settings.INFERENCE["CHANNEL"], request, capacity=queue_limit)

    async def _follow_up_knowledge(
        self, question: Message, turns: list[dict]
    ) -> tuple[str, list | None]:
        """A follow-up ("And to Germany?") names too little to be found alone: searched again
        together with the customer's previous message. Returns what was searched for, and
        the passages found."""
        earlier = memory.previous_customer_text(turns)
        if not earlier:
            return question.text, []
        asked = f"{earlier}\n{question.text}"
        return asked, await self._knowledge(asked)

    async def _knowledge(self, question: str) -> list | None:
        """The help-centre passages that answer `question`; None when the knowledge base has
        nothing for this conversation's site, or cannot be searched: the answer is then not
        grounded, and no "nothing found" is claimed."""
        site_id = self.conversation.site_id
        try:
            if not await knowledge.covers(site_id):
                return None
            return await knowledge.search(
                question=question,
                site_id=site_id,
                language=self.conversation.language,
                limit=settings.KNOWLEDGE["PROMPT_PASSAGES"],
            )
        except Exception:  # a broken index must not cost the customer the answer
            log.exception("knowledge search failed for %s; answering without it", self.cid)
            return None
