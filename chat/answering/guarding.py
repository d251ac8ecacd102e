"""The product's guards (chat/guards.py) acting on an answer: before the model is asked (a
greeting, a question no passage covers, a complaint, an order without its number) and after it
answered (the wrong language, an echo of the question, nothing said, a figure it was not given,
the offer of a human and the question for the order number it left out). A part of AnswerRun
(chat/answering/run.py)."""

import logging
import time
import uuid

from channels.exceptions import ChannelFull
from django.conf import settings
from redis.exceptions import RedisError

from chat import frames, guards, memory, metrics, services
from chat.answering.answer import Answer
from chat.answering.endings import fallback_text
from chat.answering.prompt import PromptParts
from chat.knowledge import extract, segment
from chat.prompting import language_name
from chat.punctuation import FullwidthPunctuation
from inference_worker.textguards import AnswerLimit, cut_at_sentence, han_count, word_count
from runtime.aio import db

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError)


class AnswerGuards:
    """AnswerRun's guards (`self` is the run)."""

    async def _guard_the_question(
        self, answer: Answer, parts: PromptParts, hits: list | None
    ) -> bool:
        """The guards that act before the model is asked; True when the product answered the
        question itself."""
        language, question = self.conversation.language, answer.question.text
        reply = guards.greeting_reply(question, language)
        if reply is not None:
            await self._guarded(answer, reply, (guards.GREETING,))
            return True
        answer.complaint = guards.is_complaint(question)
        answer.ask_details = guards.needs_order_details(question)
        if hits == [] and parts.offer_human_when_nothing:
            # Nothing in the help centre covers it: the product says so, in its own words,
            # rather than asking the model not to invent an answer. A question about the
            # customer's own order is never in the help centre: what helps is its number.
            guard = guards.ASK_DETAILS if answer.ask_details else guards.NOT_COVERED
            text = guards.text(guard, language)
            shaped_by = (guard,)
            if answer.complaint:
                text = joined(guards.text("apology", language), text, language=language)
                shaped_by = (guards.COMPLAINT, guard)
            await self._guarded(answer, text, shaped_by, offer_human=True)
            return True
        if answer.complaint:
            answer.prefix = guards.text("apology", language) + glue(language)
        return False

    def _model_text(self, answer: Answer) -> str:
        return answer.text[len(answer.prefix) :]

    def _punctuated(self, answer: Answer, text: str) -> str:
        if answer.punctuation is None:
            return text
        answer.punctuation = FullwidthPunctuation()
        return answer.punctuation.feed(text) + answer.punctuation.finish()

    async def _replace_text(self, answer: Answer, model_text: str) -> None:
        """What the answer's message shows becomes the product's prefix and `model_text`."""
        answer.parts = [answer.prefix + model_text] if answer.prefix + model_text else []
        await self._emit(
            frames.bot_start_frame(
                message_id=answer.message.pk, reply_to=answer.question.pk, replace=True
            )
        )
        if answer.parts:
            await self._emit(frames.bot_delta_frame(message_id=answer.message.pk, text=answer.text))

    async def _broke_a_rule(self, answer: Answer) -> bool:
        """An answer in the wrong script, one that only repeats the question, or one with
        nothing left to say: asked again once with the rule restated (True), then replaced by
        the help centre's own statements, or the localised fallback when there are none. A
        grounded answer stating a figure the model was not given is replaced by the
        statements at once: asked again, a small model makes up another. The rules every
        answer ends with follow (_closing_words)."""
        await self._emit_all(self._flush_held_text(answer))
        language = self.conversation.language
        model_text = self._model_text(answer)
        broken = (
            guards.LANGUAGE
            if guards.wrong_language(model_text, language)
            else guards.ECHO
            if guards.is_echo(model_text, answer.question.text)
            else None
        )
        if broken is None and model_text.strip():
            model_text = await self._cut_repeats(answer, model_text)
        if broken is None and model_text.strip():
            wrong = (
                guards.RESULT
                if self._misses_the_result(answer, model_text)
                else guards.FIGURES
                if self._wrong_figures(answer, model_text)
                else guards.NAMES
                if self._made_up_names(answer, model_text)
                else guards.POLARITY
                if self._says_yes_against(answer, model_text)
                else None
            )
            if wrong:
                answer.guards.append(wrong)
                metrics.guarded(wrong)
                await self._quote(answer)
            await self._closing_words(answer)
            return False
        if broken is not None:
            answer.guards.append(broken)
            metrics.guarded(broken)
            if not answer.retried:
                try:
                    await self._ask_again(answer, broken)
                    return True
                except (ChannelFull, *_REDIS_ERRORS) as exc:
                    log.warning("could not ask again for %s (%s)", self.cid, exc.__class__.__name__)
        if await self._quote(answer):
            await self._closing_words(answer)
            return False
        answer.fallback = True
        await self._replace_text(
            answer, await db(fallback_text)(self.conversation, answer.question)
        )
        return False

    async def _cut_repeats(self, answer: Answer, model_text: str) -> str:
        """The answer up to a sentence it says again, or up to where it recites a passage of
        its prompt ("[2] Warranty and repairs > …"): what comes after adds nothing."""
        cut = guards.repeated_from(model_text)
        grounding_ = answer.grounded.grounding if answer.grounded else None
        for passage in grounding_["passages"] if grounding_ else []:
            found = model_text.find(passage.split("\n", 1)[0])
            if found != -1 and (cut is None or found < cut):
                cut = found
        if cut is None:
            return model_text
        kept = model_text[:cut].rstrip()
        answer.guards.append(guards.REPETITION)
        metrics.guarded(guards.REPETITION)
        await self._replace_text(answer, kept)
        return kept

    def _misses_the_result(self, answer: Answer, model_text: str) -> bool:
        """An answer made from a look-up that does not say what it found, or says otherwise:
        the result, as the card shows it, says it better."""
        if not answer.action_texts:
            return False
        customer = "\n".join(
            turn["content"] for turn in answer.prompt[1:] if turn["role"] == "user"
        )
        missed = guards.misses_the_result(model_text, answer.action_texts, asked=customer)
        if missed:
            log.info("answer %s does not say what its look-up found", answer.request_id)
        return missed

    def _wrong_figures(self, answer: Answer, model_text: str) -> bool:
        """A grounded answer states a figure nothing the model was given states, or figures
        that are not those of the lines that answer the question (or none, when it asks for
        one): the help centre's lines say it better."""
        told = self._told(answer)
        if told is None:
            return False
        made_up = guards.unsupported_figures(model_text, told)
        if made_up:
            log.info(
                "answer %s states figures it was not given: %s",
                answer.request_id,
                ", ".join(made_up),
            )
            return True
        lines = [line.text for line in self._answering_lines(answer)]
        customer = "\n".join(
            turn["content"] for turn in answer.prompt[1:] if turn["role"] == "user"
        )
        return guards.figures_off_the_lines(
            model_text, lines, question=answer.question.text, asked=customer
        )

    def _made_up_names(self, answer: Answer, model_text: str) -> bool:
        """A grounded answer names a carrier, brand or product nothing the model was given
        names."""
        told = self._told(answer)
        made_up = guards.unsupported_names(model_text, told) if told is not None else []
        if made_up:
            log.info(
                "answer %s names what it was not given: %s", answer.request_id, ", ".join(made_up)
            )
        return bool(made_up)

    def _told(self, answer: Answer) -> str | None:
        """Everything a grounded answer's model was given (the rules, the passages, the
        conversation); None for an answer without passages."""
        grounded = answer.grounded
        if grounded is None or grounded.grounding is None or not answer.prompt:
            return None
        system, *turns = answer.prompt
        return "\n".join(
            [
                grounded.grounding["instruction"],
                *grounded.grounding["passages"],
                system["content"],
                *(turn["content"] for turn in turns),
            ]
        )

    def _says_yes_against(self, answer: Answer, model_text: str) -> bool:
        """A yes where a line that answers the question best says no, or a yes about what no
        passage the model was given names."""
        if answer.grounded is None or answer.grounded.grounding is None:
            return False
        unnamed = guards.yes_to_the_unnamed(
            model_text,
            question=answer.question.text,
            passages="\n".join(answer.grounded.grounding["passages"]),
        )
        if unnamed:
            log.info("answer %s says yes to what no passage names: %s", answer.request_id, unnamed)
            return True
        lines = self._answering_lines(answer)
        # Every line that says as much about the question as the best one: "Orders within the
        # EU never pay customs duties" ties with the line on orders outside it for a question
        # about Spain, which no line names.
        return any(
            guards.says_yes_against(
                model_text, f"{line.title}: {line.text}", question=answer.question.text
            )
            for line in lines
            if line.weight >= guards.TIED_LINE_SHARE * lines[0].weight
        )

    def _answering_lines(self, answer: Answer) -> list[extract.Statement]:
        """The help centre's statements that say most about the question, from the passages
        found in the conversation's language. All the passages found, also those the model's
        token budget left out: the product quotes them, not the model. Ranked once per
        answer: the figures, polarity and quote guards all ask for them."""
        if answer.action_texts:
            # The customer's own order, looked up: that answers, not the help centre's lines
            # that share the question's words ("我的订单…" and the returns page).
            return []
        if answer.lines is None:
            language = segment.primary_language(self.conversation.language or "en")
            found = [
                hit for hit in answer.hits if segment.primary_language(hit.language) == language
            ]
            answer.lines = extract.key_statements(answer.asked or answer.question.text, found)
        return answer.lines

    async def _quote(self, answer: Answer) -> bool:
        """The answer becomes the help centre's statements that say most about the question
        (True), or the results of the calls made for it when there are any; False when there
        is nothing to quote, and the answer is left as it was."""
        if answer.action_texts:
            answer.guards.append(guards.QUOTED)
            metrics.guarded(guards.QUOTED)
            answer.quoted = True
            await self._replace_text(
                answer, self._punctuated(answer, " ".join(answer.action_texts))
            )
            return True
        statements = self._answering_lines(answer)
        if not statements:
            return False
        answer.guards.append(guards.QUOTED)
        metrics.guarded(guards.QUOTED)
        answer.quoted = True
        await self._replace_text(
            answer,
            self._punctuated(answer, extract.quoted_answer(statements, self.conversation.language)),
        )
        return True

    async def _ask_again(self, answer: Answer, broken: str) -> None:
        language = self.conversation.language
        rule = guards.restated(
            "restate_language" if broken == guards.LANGUAGE else "restate_echo",
            language,
            language_name(language),
        )
        system, *turns = answer.prompt
        last = turns[-1] if turns else None
        answer.prompt = [{**system, "content": f"{system['content']}\n\n{rule}"}, *turns[:-1]]
        if last is not None:
            answer.prompt.append({**last, "content": f"{last['content']}\n\n({rule})"})
        answer.retried = True
        answer.request_id = uuid.uuid4().hex
        answer.started_at = None
        answer.next_presence_check = time.monotonic() + settings.INFERENCE["WORKER_TTL_SECONDS"] / 2
        answer.punctuation = FullwidthPunctuation() if answer.punctuation else None
        room, queue_limit = await self._room()
        if room.live == 0 or room.queued >= queue_limit:
            raise ChannelFull
        await self._replace_text(answer, "")
        await self._dispatch(answer, queue_limit)

    async def _closing_words(self, answer: Answer) -> None:
        """What the product adds after the model's last word, when the model left it out: the
        offer of a human after a complaint, the question for the order number."""
        language, model_text, more = self.conversation.language, self._model_text(answer), []
        if answer.complaint:
            answer.guards.append(guards.COMPLAINT)
            metrics.guarded(guards.COMPLAINT)
            answer.offer_human = True
            if not guards.offers_human(model_text):
                more.append(guards.text("offer_human", language))
        if answer.ask_details and not guards.asks_for_details(model_text):
            answer.guards.append(guards.ASK_DETAILS)
            metrics.guarded(guards.ASK_DETAILS)
            more.append(guards.text(guards.ASK_DETAILS, language))
        if more:
            between = glue(language)
            await self._make_room(answer, between.join(more))
            addition = ("" if answer.text[-1:].isspace() else between) + between.join(more)
            answer.parts.append(addition)
            await self._emit(frames.bot_delta_frame(message_id=answer.message.pk, text=addition))

    async def _make_room(self, answer: Answer, addition: str) -> None:
        """The model's text cut back to a sentence, when the product's closing words would
        take the answer past the profile's answer limit: the limit holds for what the
        customer reads, the product's words included."""
        limits = answer.stream_guards or {}
        if not (limits.get("max_words") and limits.get("max_han")):
            return
        limit = AnswerLimit(limits["max_words"], limits["max_han"])
        if not limit.exceeded_by(answer.text + " " + addition):
            return
        taken = f"{answer.prefix} {addition}"
        room = AnswerLimit(
            max(limit.words - word_count(taken), 0), max(limit.han - han_count(taken), 0)
        )
        kept = cut_at_sentence(room.fit(self._model_text(answer)))
        if guards.LENGTH not in answer.guards:
            answer.guards.append(guards.LENGTH)
            metrics.guarded(guards.LENGTH)
        await self._replace_text(answer, kept)

    async def _guarded(
        self, answer: Answer, text: str, shaped_by: tuple[str, ...], *, offer_human: bool = False
    ) -> None:
        """The product answers in its own words, without the model (a question no
        help-centre article covers); its finish reason is the last guard of `shaped_by`."""
        answer.finished = True
        guard = shaped_by[-1]
        try:
            message = await db(services.bot_message_guarded)(
                conversation=self.conversation, text=text, guards=shaped_by
            )
        except services.BotSilenced:
            metrics.answer_ended(metrics.TAKEN_OVER, "silenced")
            self.ended = True
            return
        for name in shaped_by:
            metrics.guarded(name)
        metrics.answer_ended(metrics.GUARDED, guard)
        await self._emit(frames.bot_start_frame(message_id=message.pk, reply_to=answer.question.pk))
        await self._emit(frames.bot_delta_frame(message_id=message.pk, text=message.text))
        answer.done_frame = frames.bot_done_frame(
            message_id=message.pk,
            usage={"prompt_tokens": 0, "completion_tokens": 0},
            ttft_ms=None,
            total_ms=0,
            finish_reason=guard,
            fallback=False,
            partial=False,
            guards=shaped_by,
            offer_human=offer_human,
        )
        await self._emit(answer.done_frame)
        await memory.remember(message)


def glue(language: str) -> str:
    """What goes between two sentences: a space, but none in Chinese."""
    return "" if (language or "").lower().startswith("zh") else " "


def joined(*sentences: str, language: str) -> str:
    return glue(language).join(s.strip() for s in sentences if s.strip())
