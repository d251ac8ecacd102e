"""Reads of the playground: bot profiles, a staff member's own playground conversations, the
system prompt as the model would get it, what saving settings would change, and the session
export. Views and forms get their data here."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from chat import handoff_phrases
from chat import selectors as chat_selectors
from chat.models import BotProfile, Conversation, Message
from chat.prompting import render_system_prompt

PANES = {"a": "A", "b": "B"}  # side by side: two settings, two conversations
EXPORT_MESSAGES = 1000


def profiles() -> list[BotProfile]:
    return list(BotProfile.objects.order_by("-is_default", "name"))


def profile_for(*, profile_id: int | None) -> BotProfile | None:
    """Profile `profile_id`; without one, what a conversation naming no profile gets."""
    if profile_id is None:
        return chat_selectors.bot_profile_for(Conversation())
    return BotProfile.objects.filter(pk=profile_id).first()


def own_conversation(*, user: AbstractBaseUser, conversation_id) -> Conversation | None:
    """`user`'s playground conversation: never a customer's, nor another staff member's."""
    return Conversation.objects.filter(
        pk=conversation_id,
        channel=Conversation.Channel.PLAYGROUND,
        metadata__playground__staff_id=user.pk,
    ).first()


def asks_for_human(*, conversation_id, text: str) -> bool:
    """Whether `text` would hand a customer's conversation to a human, by the rules of
    chat.selectors.asks_for_human, asked before the text is stored."""
    cfg = settings.CHAT
    if handoff_phrases.asks_for_human(text, cfg["HANDOFF_PHRASES"]):
        return True
    if conversation_id is None:
        return False
    # Any id is "before" a message not stored yet.
    previous = chat_selectors.last_bot_text(conversation_id=conversation_id, before_id=2**62)
    return handoff_phrases.accepts_offer(
        text, previous, offers=cfg["HANDOFF_OFFERS"], affirmatives=cfg["HANDOFF_AFFIRMATIVES"]
    )


def system_prompt_preview(
    *, profile: BotProfile, template: str, language: str, region: str, timezone_name: str
) -> str:
    """The system prompt as the model would get it now (a playground conversation has no
    site: {site_name} is the profile's, as in `chat.answering.prompt.prompt_parts`)."""
    return render_system_prompt(
        template or profile.system_prompt,
        site_name=profile.site_name,
        language=language,
        region=region,
        timezone=timezone_name,
        now=timezone.now(),
    )


@dataclass(frozen=True)
class Change:
    label: str
    old: object
    new: object


def profile_changes(profile: BotProfile, values: dict) -> list[Change]:
    changes = []
    for name, new in values.items():
        old = getattr(profile, name)
        if old != new:
            label = str(BotProfile._meta.get_field(name).verbose_name).capitalize()
            if name == "system_prompt":  # too long for a table cell: its size says enough
                old, new = f"{len(old)} characters", f"{len(new)} characters, edited"
            changes.append(Change(label, old, new))
    return changes


def tokens_per_second(
    completion_tokens: int | None, ttft_ms: int | None, total_ms: int | None
) -> float | None:
    """Generation speed: completion tokens over the time from the first token to the end
    (the whole answer's time when that is unknown or nil). The page computes the same
    (static/playground/src/figures.js)."""
    if not completion_tokens or not total_ms:
        return None
    span = total_ms - ttft_ms if ttft_ms is not None and total_ms > ttft_ms else total_ms
    return round(completion_tokens * 1000 / span, 1)


def session_export(*, user: AbstractBaseUser, conversation_ids: dict) -> dict | None:
    """The panes' conversations (pane → conversation id) as stored: every message, with each
    answer the settings it was asked with, the exact prompt the model saw and its figures.
    None if any of them is not `user`'s playground conversation."""
    conversations = {
        pane: own_conversation(user=user, conversation_id=cid)
        for pane, cid in conversation_ids.items()
    }
    if not conversations or None in conversations.values():
        return None
    panes = []
    for pane, conversation in conversations.items():
        asked = conversation.metadata.get("playground", {}).get("answers", {})
        messages, totals, question = (
            [],
            {"answers": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_ms": 0},
            None,
        )
        for m in chat_selectors.conversation_history(
            conversation_id=conversation.pk, limit=EXPORT_MESSAGES
        ):
            item = {"id": m.pk, "role": m.role, "text": m.text, "created_at": m.created_at}
            if m.role == Message.Role.CUSTOMER:
                question = m.pk
            elif m.role == Message.Role.BOT:
                # The playground sends one question at a time: an answer is the last one's.
                item |= {
                    "reply_to": question,
                    "settings": asked.get(str(question)),
                    "model": m.model_name,
                    "prompt": m.prompt,
                    "figures": {
                        "prompt_tokens": m.prompt_tokens,
                        "completion_tokens": m.completion_tokens,
                        "ttft_ms": m.ttft_ms,
                        "total_ms": m.total_ms,
                        "tokens_per_second": tokens_per_second(
                            m.completion_tokens, m.ttft_ms, m.total_ms
                        ),
                        "finish_reason": m.finish_reason,
                        "fallback": m.is_fallback,
                        "partial": m.is_partial,
                    },
                }
                totals["answers"] += 1
                totals["prompt_tokens"] += m.prompt_tokens or 0
                totals["completion_tokens"] += m.completion_tokens or 0
                totals["total_ms"] += m.total_ms or 0
            messages.append(item)
        panes.append(
            {
                "pane": PANES[pane],
                "conversation_id": str(conversation.pk),
                "channel": conversation.channel,
                "messages": messages,
                "totals": totals,
            }
        )
    return {"exported_at": timezone.now(), "exported_by": user.get_username(), "panes": panes}
