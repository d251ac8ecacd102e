"""Writes. Every change to conversations and messages goes through these functions."""

import secrets

from django.db import IntegrityError, transaction
from django.db.models import Case, F, TextField, Value, When
from django.utils import timezone

from chat import customers, group_events, hooks, metrics, selectors
from chat.customers import VerifiedCustomer
from chat.models import ApiKey, ApiSession, Conversation, Feedback, Inbox, Message, Site
from chat.selectors import hash_token
from runtime.broadcast import after_commit

# Bytes of randomness in a site's identity secret: HS256 wants a key at least as long as its
# 32-byte hash (RFC 7518, 3.2).
IDENTITY_SECRET_BYTES = 32


def conversation_start(
    *,
    site: Site | None = None,
    language: str = "",
    region: str = "",
    timezone_name: str = "",
    page_url: str = "",
    user_agent: str = "",
    metadata: dict | None = None,
    channel: str = Conversation.Channel.WIDGET,
    inbox: Inbox | None = None,
    contact: str = "",
) -> tuple[Conversation, str]:
    """Create a conversation; returns it with its access token, which is stored only hashed."""
    conversation, token = conversation_prepare(
        site=site,
        language=language,
        region=region,
        timezone_name=timezone_name,
        page_url=page_url,
        user_agent=user_agent,
        metadata=metadata,
        channel=channel,
        inbox=inbox,
        contact=contact,
    )
    conversation, _ = conversation_open(conversation=conversation)
    return conversation, token


def conversation_prepare(
    *,
    site: Site | None = None,
    language: str = "",
    region: str = "",
    timezone_name: str = "",
    page_url: str = "",
    user_agent: str = "",
    metadata: dict | None = None,
    channel: str = Conversation.Channel.WIDGET,
    inbox: Inbox | None = None,
    contact: str = "",
) -> tuple[Conversation, str]:
    """A new conversation and its access token, not stored yet (see chat.drafts): the widget
    opens one for every page view, most of which never say a word."""
    token = secrets.token_urlsafe(32)
    conversation = Conversation(
        token_hash=hash_token(token),
        channel=channel,
        site=site,
        bot_profile_id=site.bot_profile_id if site else None,
        language=language[:35],
        region=region[:64],
        timezone=timezone_name[:64],
        page_url=page_url[:2000],
        user_agent=user_agent[:512],
        metadata=metadata or {},
        inbox=inbox,
        contact=contact[:254],
    )
    return conversation, token


def conversation_open(*, conversation: Conversation) -> tuple[Conversation, bool]:
    """Store a prepared conversation (its first message, or hand-off request, is coming) and
    tell the console. Another tab of the same visitor may have stored it first: then that row
    is returned, and False."""
    try:
        with transaction.atomic():
            conversation.save(force_insert=True)
            hooks.emit(
                "conversation.created", conversation_id=conversation.pk, conversation=conversation
            )
            after_commit(
                (
                    group_events.CONSOLE_GROUP,
                    group_events.console_update(conversation_id=str(conversation.pk), reason="new"),
                )
            )
    except IntegrityError:
        return Conversation.objects.get(pk=conversation.pk), False
    return conversation, True


def api_session_open(
    *,
    api_key: ApiKey,
    session_id: str,
    channel: str,
    language: str = "",
    region: str = "",
    customer: VerifiedCustomer | None = None,
) -> Conversation:
    """The conversation of the caller's `session_id` under this key, made on first use (for the
    key's site, told to the console). A language or region given later replaces the one
    stored: the customer moved on. `customer` (a key with the "customers" scope vouches for
    them) marks the conversation as theirs; raises CustomerMismatch, changing nothing, when
    the session is another customer's."""
    session = (
        ApiSession.objects.select_related("conversation")
        .filter(api_key=api_key, session_id=session_id)
        .first()
    )
    if session is None:
        session = _api_session_create(
            api_key=api_key,
            session_id=session_id,
            channel=channel,
            language=language,
            region=region,
        )
    with transaction.atomic():
        if customer is not None:
            customer_verify(conversation=session.conversation, customer=customer)
        return _update_locale(session.conversation, language=language, region=region)


def _api_session_create(
    *, api_key: ApiKey, session_id: str, channel: str, language: str, region: str
) -> ApiSession:
    site = api_key.site
    try:
        with transaction.atomic():
            conversation, _token = conversation_start(
                site=site,
                language=language or (site.language if site else ""),
                region=region,
                channel=channel,
                metadata={"api_key": api_key.prefix, "session_id": session_id},
            )
            session = ApiSession.objects.create(
                api_key=api_key, session_id=session_id, conversation=conversation
            )
            cid = str(conversation.pk)
            after_commit(
                (
                    group_events.CONSOLE_GROUP,
                    group_events.console_update(conversation_id=cid, reason="new"),
                )
            )
    except IntegrityError:  # the same new session_id in two requests at once
        return ApiSession.objects.select_related("conversation").get(
            api_key=api_key, session_id=session_id
        )
    return session


def api_conversation_start(
    *, api_key: ApiKey, history: list[tuple[str, str]], instructions: str = "", user: str = ""
) -> Conversation:
    """A conversation for one stateless OpenAI-style call, so staff can review it: the
    caller's earlier turns (`history`: ("customer" | "bot", text), oldest first) are stored as
    they were given, before the newest message goes through `chat.turns` like any other."""
    site = api_key.site
    with transaction.atomic():
        conversation, _token = conversation_start(
            site=site,
            language=site.language if site else "",
            channel=Conversation.Channel.OPENAI,
            metadata={
                "api_key": api_key.prefix,
                "user": user[:256],
                "instructions": instructions[:4000],
            },
        )
        Message.objects.bulk_create(
            [
                Message(
                    conversation=conversation,
                    role=role,
                    text=text,
                    model_name="(caller)" if role == Message.Role.BOT else "",
                )
                for role, text in history
            ]
        )
        if history:
            _touch(conversation.pk)
        after_commit(
            (
                group_events.CONSOLE_GROUP,
                group_events.console_update(conversation_id=str(conversation.pk), reason="new"),
            )
        )
    return conversation


def _update_locale(conversation: Conversation, *, language: str, region: str) -> Conversation:
    changes = {
        name: value
        for name, value in (("language", language[:35]), ("region", region[:64]))
        if value and getattr(conversation, name) != value
    }
    if changes:
        for name, value in changes.items():
            setattr(conversation, name, value)
        conversation.save(update_fields=[*changes, "updated_at"])
    return conversation


class CustomerMismatch(Exception):
    """The conversation is another customer's: a conversation never changes customer."""


def customer_verify(*, conversation: Conversation, customer: VerifiedCustomer) -> Conversation:
    """Mark the conversation as `customer`'s, verified until `customer.expires_at` (the later
    of that and an earlier verification's: each token holds until its own `exp`). Their name
    and e-mail address, when given, replace the conversation's. Raises CustomerMismatch,
    changing nothing, when the conversation is already another customer's.

    A conversation not stored yet (chat/drafts.py) is changed in memory only: its caller
    keeps the draft. Returns the conversation as it now is (the stored row, should another tab
    have stored the draft meanwhile)."""
    if conversation._state.adding:
        stored = Conversation.objects.filter(pk=conversation.pk).first()
        if stored is None:
            _check_same_customer(conversation, customer)
            _set_customer(conversation, customer)
            return conversation
        conversation = stored
    with transaction.atomic():
        # The row lock orders two tabs (or two API calls) that verify at the same moment.
        row = Conversation.objects.select_for_update().get(pk=conversation.pk)
        _check_same_customer(row, customer)
        _set_customer(row, customer)
        row.save(
            update_fields=[
                "customer_id",
                "customer_name",
                "customer_email",
                "customer_verified_until",
                "updated_at",
            ]
        )
        cid = str(row.pk)
        after_commit(
            (
                group_events.CONSOLE_GROUP,
                group_events.console_update(conversation_id=cid, reason="customer"),
            )
        )
    for name in ("customer_id", "customer_name", "customer_email", "customer_verified_until"):
        setattr(conversation, name, getattr(row, name))
    return conversation


def customer_token_accept(*, conversation: Conversation, token: str) -> Conversation:
    """Check a customer token against the identity secret the conversation's site has now (a
    secret made since the socket opened counts) and mark the conversation as that customer's.
    Raises customers.CustomerTokenError or CustomerMismatch; either way nothing changes."""
    customer = customers.verify_token(token, site=selectors.site_of(conversation))
    return customer_verify(conversation=conversation, customer=customer)


def _check_same_customer(conversation: Conversation, customer: VerifiedCustomer) -> None:
    if conversation.customer_id and conversation.customer_id != customer.id:
        raise CustomerMismatch(
            "This conversation is verified for another customer, and a conversation never "
            "changes customer: start a new one for this customer."
        )


def _set_customer(conversation: Conversation, customer: VerifiedCustomer) -> None:
    conversation.customer_id = customer.id
    if customer.name:
        conversation.customer_name = customer.name
    if customer.email:
        conversation.customer_email = customer.email
    until = conversation.customer_verified_until
    conversation.customer_verified_until = max(until or customer.expires_at, customer.expires_at)


def site_identity_secret_renew(*, site: Site) -> str:
    """A new identity secret for the site, replacing the old one at once (tokens signed with
    that one no longer verify). Returns it: it is shown once, and never logged."""
    secret = secrets.token_urlsafe(IDENTITY_SECRET_BYTES)
    site.identity_secret = secret
    site.identity_secret_created_at = timezone.now()
    site.save(update_fields=["identity_secret", "identity_secret_created_at"])
    return secret


def message_add_customer(
    *, conversation: Conversation, text: str, client_id: str | None, metadata: dict | None = None
) -> tuple[Message, bool]:
    """Store a customer message once per `client_id`. Returns (message, created) and sets
    `conversation.status` to the status at the time of the write; raises ConversationClosed
    (unless the message was stored before it closed: a resend then gets it back)."""
    # A resend (same client_id) is found by the unique constraint rather than looked up
    # first: resends are rare, and every message would pay for the look-up.
    try:
        with transaction.atomic():
            # The status as of this write: the caller decides on it whether the bot answers.
            status, last_message_at = (
                Conversation.objects.filter(pk=conversation.pk)
                .values_list("status", "last_message_at")
                .get()
            )
            if status == Conversation.Status.CLOSED:
                stored = (
                    client_id
                    and Message.objects.filter(
                        conversation=conversation, client_id=client_id
                    ).first()
                )
                if stored:
                    return stored, False
                raise ConversationClosed
            conversation.status = status
            message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.CUSTOMER,
                text=text,
                client_id=client_id or None,
                metadata=metadata or {},
            )
            message_told(message)
            hooks.emit("message.customer", conversation_id=conversation.pk, message=message)
    except IntegrityError:
        # This client_id is stored already: a resend after a reconnect, or another tab's.
        return Message.objects.get(conversation=conversation, client_id=client_id), False
    # The turn cache of a brand-new conversation starts with this message (chat.memory).
    message.opens_conversation = last_message_at is None
    return message, True


class ConversationClosed(Exception):
    """The conversation is closed: nothing more is stored in it."""


class BotSilenced(Exception):
    """The conversation is no longer the bot's (a human took over, or it closed)."""


def _lock_for_bot(conversation: Conversation) -> None:
    """Inside a transaction: raise BotSilenced unless the bot may still speak. The row lock
    (a write lock on SQLite) orders this against a takeover, so no bot message is ever
    created after a human took the conversation."""
    status = (
        Conversation.objects.select_for_update()
        .filter(pk=conversation.pk)
        .values_list("status", flat=True)
        .first()
    )
    if status != Conversation.Status.BOT:
        raise BotSilenced(status)


def bot_message_start(*, conversation: Conversation, model_name: str) -> Message:
    """An empty bot message, created when the worker starts answering so frames can carry its
    id. It is flagged partial until `bot_message_finish` stores the whole answer: if the
    process dies mid-answer, the transcript says so."""
    with transaction.atomic():
        _lock_for_bot(conversation)
        return Message.objects.create(
            conversation=conversation,
            role=Message.Role.BOT,
            text="",
            model_name=model_name[:200],
            is_partial=True,
        )


def bot_message_finish(
    *,
    message: Message,
    text: str,
    finish_reason: str,
    partial: bool,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    ttft_ms: int | None,
    total_ms: int | None,
    prompt: list[dict] | None = None,
    sources: list[dict] | None = None,
    guards: tuple[str, ...] = (),
    fallback: bool = False,
) -> Message:
    """`guards`: the product's guards that shaped the answer; `fallback`: it broke one of
    them twice and the fallback rules' answer replaced it."""
    message.text = text
    message.guards = ",".join(guards)[:100]
    message.is_fallback = fallback
    message.prompt = prompt
    message.sources = sources or []
    message.finish_reason = finish_reason[:20]
    message.is_partial = partial
    message.prompt_tokens = prompt_tokens
    message.completion_tokens = completion_tokens
    message.ttft_ms = ttft_ms
    message.total_ms = total_ms
    with transaction.atomic():
        message.save(
            update_fields=[
                "text",
                "finish_reason",
                "is_partial",
                "prompt_tokens",
                "completion_tokens",
                "ttft_ms",
                "total_ms",
                "prompt",
                "sources",
                "guards",
                "is_fallback",
                "updated_at",
            ]
        )
        message_told(message)
        hooks.emit("message.bot", conversation_id=message.conversation_id, message=message)
    return message


def bot_message_hold_as_draft(*, message: Message) -> None:
    """Mark a bot answer as a draft that waits for an agent (a channel whose inbox is in
    "draft" mode holds it back): the console offers to send or discard it. Inside the
    transaction that stored it."""
    message.metadata = {**(message.metadata or {}), "draft": "held"}
    Message.objects.filter(pk=message.pk).update(metadata=message.metadata)


PARTIAL_SAVE_CHUNK = 500  # answers per UPDATE: 2 parameters each, far below SQLite's limit


def bot_messages_save_partial(*, texts: dict[int, str]) -> None:
    """The text streamed so far of answers still under way (message id → text), all in one
    transaction: after a crash or restart, history shows what the customer saw. An answer
    that has ended meanwhile is not touched."""
    # One UPDATE per chunk (text = CASE id WHEN ... END), not one per answer: building a
    # query costs the database thread more than running it, and that thread (its share of
    # the GIL, on SQLite all of a process's database work) is what every other
    # conversation waits for.
    now, items = timezone.now(), list(texts.items())
    with transaction.atomic():
        for start in range(0, len(items), PARTIAL_SAVE_CHUNK):
            chunk = dict(items[start : start + PARTIAL_SAVE_CHUNK])
            Message.objects.filter(pk__in=chunk, is_partial=True, finish_reason="").update(
                text=Case(
                    *(When(pk=pk, then=Value(text)) for pk, text in chunk.items()),
                    default=F("text"),
                    output_field=TextField(),
                ),
                updated_at=now,
            )


def bot_message_abandon(*, message_id: int, finish_reason: str = "interrupted") -> Message | None:
    """Close the answer a dead process was streaming (it died without storing it): what its
    last partial save kept stays, flagged partial with `finish_reason`. None when the answer
    ended meanwhile (stored by its run, or closed here already)."""
    with transaction.atomic():
        closed = Message.objects.filter(
            pk=message_id, role=Message.Role.BOT, is_partial=True, finish_reason=""
        ).update(finish_reason=finish_reason[:20], updated_at=timezone.now())
        if not closed:
            return None
        message = Message.objects.get(pk=message_id)
        if message.text:
            message_told(message)
    return message


def bot_message_fallback(*, conversation: Conversation, text: str, reason: str) -> Message:
    """An answer from the fallback rules, when the model timed out, failed or is down."""
    with transaction.atomic():
        _lock_for_bot(conversation)
        message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.BOT,
            text=text,
            is_fallback=True,
            finish_reason=reason[:20],
            model_name="fallback-rules",
        )
        message_told(message)
        hooks.emit("message.bot", conversation_id=conversation.pk, message=message)
    return message


def bot_message_guarded(
    *, conversation: Conversation, text: str, guards: tuple[str, ...]
) -> Message:
    """An answer the product gave in its own words, without asking the model (chat/guards.py:
    a question no help-centre article covers); its finish reason is the last of `guards`."""
    with transaction.atomic():
        _lock_for_bot(conversation)
        message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.BOT,
            text=text,
            guards=",".join(guards)[:100],
            finish_reason=guards[-1][:20],
            model_name="guard",
        )
        message_told(message)
        hooks.emit("message.bot", conversation_id=conversation.pk, message=message)
    return message


def feedback_submit(
    *, conversation: Conversation, message_id: int, rating: str, comment: str = ""
) -> Feedback:
    """Rate one bot answer of this conversation; a second rating replaces the first.
    Raises Message.DoesNotExist for anything that is not a bot answer of this conversation."""
    message = Message.objects.get(pk=message_id, conversation=conversation, role=Message.Role.BOT)
    with transaction.atomic():
        feedback, _ = Feedback.objects.update_or_create(
            message=message, defaults={"rating": rating, "comment": comment}
        )
        hooks.emit("conversation.rated", conversation_id=conversation.pk, feedback=feedback)
    metrics.feedback(rating)
    return feedback


def csat_submit(*, conversation: Conversation, score: int, comment: str = "") -> Conversation:
    """The customer's satisfaction with the whole conversation; the latest answer counts."""
    conversation.csat_score = score
    conversation.csat_comment = comment
    conversation.csat_at = timezone.now()
    with transaction.atomic():
        conversation.save(update_fields=["csat_score", "csat_comment", "csat_at", "updated_at"])
        hooks.emit("conversation.rated", conversation_id=conversation.pk, conversation=conversation)
    metrics.csat(score)
    return conversation


def conversation_close(*, conversation: Conversation, closed_by: str) -> bool:
    """End the conversation, whoever ends it (`closed_by`: "The customer", or the agent's
    name): one status change, a line in the transcript saying who closed it, and every tab of
    the customer, every watcher and the inbox told. False (and nothing changes) if it was
    closed already."""
    with transaction.atomic():
        closed = (
            Conversation.objects.filter(pk=conversation.pk)
            .exclude(status=Conversation.Status.CLOSED)
            .update(
                status=Conversation.Status.CLOSED,
                closed_at=timezone.now(),
                updated_at=timezone.now(),
            )
        )
        if closed:
            system_note(conversation, f"{closed_by} closed the conversation.")
            status_changed(conversation, Conversation.Status.CLOSED)
            hooks.emit("conversation.closed", conversation_id=conversation.pk, closed_by=closed_by)
    conversation.refresh_from_db(fields=["status", "closed_at"])
    return bool(closed)


def status_changed(conversation: Conversation, status: str, name: str = "") -> None:
    """Tell the customer's sockets, the watchers and the inbox, once the change commits."""
    cid = str(conversation.pk)
    event = group_events.conv_status(conversation_id=cid, status=status, agent_name=name)
    after_commit(
        (group_events.conversation_group(cid), event),
        (group_events.watch_group(cid), event),
        (
            group_events.CONSOLE_GROUP,
            group_events.console_update(conversation_id=cid, reason=status),
        ),
    )


def system_note(conversation: Conversation, text: str) -> Message:
    """A system line in the transcript, for people (never a model turn)."""
    message = Message.objects.create(conversation=conversation, role=Message.Role.SYSTEM, text=text)
    cid = str(conversation.pk)
    after_commit(
        (
            group_events.watch_group(cid),
            group_events.conv_message(
                conversation_id=cid, message_id=message.pk, role=message.role, text=text
            ),
        )
    )
    return message


def message_told(message: Message, *, author_name: str = "", to_customer: bool = False) -> None:
    """Something was said: the conversation moves up the inbox, and once the transaction
    commits its watchers and the inbox hear of it, and the customer's tabs too for words they
    did not send themselves (`to_customer`: an agent's reply). The one way every service that
    stores a message tells the others."""
    _touch(message.conversation_id)
    cid = str(message.conversation_id)
    event = group_events.conv_message(
        conversation_id=cid,
        message_id=message.pk,
        role=message.role,
        text=message.text,
        author_name=author_name,
    )
    pairs = [(group_events.conversation_group(cid), event)] if to_customer else []
    after_commit(
        *pairs,
        (group_events.watch_group(cid), event),
        (
            group_events.CONSOLE_GROUP,
            group_events.console_update(conversation_id=cid, reason="message"),
        ),
    )


def _touch(conversation_id) -> None:
    now = timezone.now()
    Conversation.objects.filter(pk=conversation_id).update(last_message_at=now, updated_at=now)
