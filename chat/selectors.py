"""Reads. Views, consumers and admin get data through these, never through ad-hoc queries."""

import hashlib
import hmac
import uuid

from django.conf import settings

from chat import customers, handoff_phrases
from chat.customers import VerifiedCustomer
from chat.models import (
    ApiKey,
    ApiSession,
    BotProfile,
    Conversation,
    FallbackRule,
    Message,
    Site,
)

# Roles the model sees as conversation turns; system notes are for people only.
TURN_ROLES = (Message.Role.CUSTOMER, Message.Role.BOT, Message.Role.AGENT)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def conversation_for_customer(*, conversation_id: str, token: str) -> Conversation | None:
    """The conversation if `token` is its access token; None for an unknown id or a wrong token
    alike, so a caller cannot tell which conversations exist."""
    try:
        pk = uuid.UUID(str(conversation_id))
    except ValueError:
        return None
    conversation = Conversation.objects.filter(pk=pk).first()
    if conversation is None:
        # Compare anyway so an unknown id takes as long as a wrong token.
        hmac.compare_digest(hash_token(token), "0" * 64)
        return None
    if not hmac.compare_digest(hash_token(token), conversation.token_hash):
        return None
    return conversation


def verified_customer(*, conversation_id) -> VerifiedCustomer | None:
    """The customer the company's back end vouches for in this conversation now, or None: no
    one was ever verified in it, or the verification has expired (its record stays, shown to
    staff, until a fresh token renews it). Read from the database, so a token another tab or
    process accepted counts: whatever acts on a customer's data asks this, every time."""
    conversation = (
        Conversation.objects.filter(pk=conversation_id)
        .only("customer_id", "customer_name", "customer_email", "customer_verified_until")
        .first()
    )
    customer = customers.customer_of(conversation) if conversation is not None else None
    return customer if customer is not None and customer.is_current() else None


def api_session_conversation(*, api_key: ApiKey, session_id: str) -> Conversation | None:
    """The conversation of this key's `session_id`; another key's sessions are never found."""
    session = (
        ApiSession.objects.select_related("conversation")
        .filter(api_key=api_key, session_id=session_id)
        .first()
    )
    return session.conversation if session is not None else None


def conversation_history(*, conversation_id, limit: int = 200) -> list[Message]:
    """The newest `limit` messages, oldest first, for a resuming customer, with any feedback
    on them (`message.feedback`, or no such attribute) and the calls of the company's back
    end each answer made (`message.action_calls`)."""
    newest = (
        Message.objects.filter(conversation_id=conversation_id)
        .select_related("feedback", "author")
        .prefetch_related("action_calls__action")
        .order_by("-id")[:limit]
    )
    return list(reversed(newest))


def conversation_language(*, conversation_id) -> str:
    return (
        Conversation.objects.filter(pk=conversation_id).values_list("language", flat=True).first()
        or ""
    )


def site_of(conversation: Conversation) -> Site | None:
    if conversation.site_id is None:
        return None
    return Site.objects.filter(pk=conversation.site_id).first()


def enabled_fallback_rules() -> list[FallbackRule]:
    """The rule engine's rules, in the order they are tried."""
    return list(FallbackRule.objects.filter(enabled=True).order_by("priority", "id"))


def site_by_key(*, site_key: str, active_only: bool = True) -> Site | None:
    """The site with this key; `active_only=False` for staff tools, which also manage sites
    that are switched off."""
    if not active_only:
        return Site.objects.filter(key=site_key).first()
    return Site.objects.filter(key=site_key, is_active=True).first()


def site_for_origin(*, site_key: str, origin: str) -> Site | None:
    """The active site with this key if it allows pages on `origin`, else None."""
    site = site_by_key(site_key=site_key)
    if site is None or not site.allows(origin):
        return None
    return site


def recent_turns(*, conversation_id, limit: int) -> list[dict]:
    """The last `limit` turns with text, oldest first, in the shape the turn cache stores."""
    rows = (
        Message.objects.filter(conversation_id=conversation_id, role__in=TURN_ROLES)
        .exclude(text="")
        .order_by("-id")
        .values("id", "role", "text")[:limit]
    )
    return list(reversed(list(rows)))


def bot_profile_for(conversation: Conversation) -> BotProfile:
    """The conversation's profile, else the default one, else an unsaved built-in default."""
    if conversation.bot_profile_id:
        profile = BotProfile.objects.filter(pk=conversation.bot_profile_id).first()
        if profile is not None:
            return profile
    profile = BotProfile.objects.filter(is_default=True).first()
    if profile is not None:
        return profile
    from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT

    return BotProfile(name=DEFAULT_PROFILE_NAME, system_prompt=DEFAULT_SYSTEM_PROMPT)


def unanswered_question(*, conversation_id) -> Message | None:
    """The customer's newest message when the newest turn is theirs (the bot owes an answer)."""
    last = (
        Message.objects.filter(conversation_id=conversation_id, role__in=TURN_ROLES)
        .exclude(text="")
        .order_by("-id")
        .values_list("role", flat=True)
        .first()
    )
    if last != Message.Role.CUSTOMER:
        return None
    return newest_customer_message(conversation_id=conversation_id)


def question_owed(*, conversation_id) -> Message | None:
    """The customer's question the bot owes an answer, if the bot holds the conversation."""
    if not Conversation.objects.filter(pk=conversation_id, status=Conversation.Status.BOT).exists():
        return None
    return unanswered_question(conversation_id=conversation_id)


def newest_customer_message(*, conversation_id, after_id: int = 0) -> Message | None:
    """The newest customer message with an id above `after_id`, if any."""
    return (
        Message.objects.filter(
            conversation_id=conversation_id, role=Message.Role.CUSTOMER, id__gt=after_id
        )
        .order_by("-id")
        .first()
    )


def newest_unanswered_customer_message(*, conversation_id, after_id: int) -> Message | None:
    """The newest customer message above `after_id` while the bot holds the conversation,
    unless it asks for a human (its socket hands the conversation off instead)."""
    latest = (
        Message.objects.filter(
            conversation_id=conversation_id,
            conversation__status=Conversation.Status.BOT,
            role=Message.Role.CUSTOMER,
            id__gt=after_id,
        )
        .order_by("-id")
        .first()
    )
    return None if latest is None or asks_for_human(latest) else latest


def asks_for_human(message: Message) -> bool:
    """The customer's words ask for a human: a hand-off phrase, or yes to the bot's offer."""
    cfg = settings.CHAT
    if handoff_phrases.asks_for_human(message.text, cfg["HANDOFF_PHRASES"]):
        return True
    if not handoff_phrases.is_affirmative(message.text, cfg["HANDOFF_AFFIRMATIVES"]):
        return False  # only a yes accepts an offer: the bot's last words need not be read
    previous = last_bot_text(conversation_id=message.conversation_id, before_id=message.id)
    return handoff_phrases.accepts_offer(
        message.text,
        previous,
        offers=cfg["HANDOFF_OFFERS"],
        affirmatives=cfg["HANDOFF_AFFIRMATIVES"],
    )


def last_bot_text(*, conversation_id, before_id: int) -> str:
    return (
        Message.objects.filter(
            conversation_id=conversation_id, role=Message.Role.BOT, id__lt=before_id
        )
        .exclude(text="")
        .order_by("-id")
        .values_list("text", flat=True)
        .first()
    ) or ""
