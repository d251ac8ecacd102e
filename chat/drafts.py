"""Conversations that have not said anything yet: kept in Redis, not in the database.

Most visitors who load a page with the widget never type. A conversation gets its database
row, and the console hears of it, with the first frame that needs one (a message, a hand-off
request, contact details, a rating, a close: `chat.services.conversation_open`). Until then it
exists only here, so that a reload or a second tab can resume it by its id and token like a
stored one and both tabs end up in the same conversation. Losing this (a Redis restart)
loses nothing said: a socket that resumes a lost draft is told to start a new conversation.
"""

import hmac
import json
import logging
import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.dateparse import parse_datetime
from redis.exceptions import RedisError

from chat.models import Conversation
from chat.selectors import hash_token
from runtime.redis_client import get_redis

log = logging.getLogger(__name__)

# What a draft keeps: everything conversation_prepare sets.
FIELDS = (
    "token_hash",
    "channel",
    "site_id",
    "bot_profile_id",
    "language",
    "region",
    "timezone",
    "page_url",
    "user_agent",
    "metadata",
    # A verified customer (chat/customers.py): a token can come before the first message.
    "customer_id",
    "customer_name",
    "customer_email",
    "customer_verified_until",
)


def _key(conversation_id) -> str:
    return f"conversation:draft:{conversation_id}"


async def keep(conversation: Conversation) -> None:
    """Remember an unsaved conversation for CHAT["DRAFT_TTL_SECONDS"]."""
    fields = {name: getattr(conversation, name) for name in FIELDS}
    try:
        await get_redis().set(
            _key(conversation.pk),
            json.dumps(fields, cls=DjangoJSONEncoder),
            ex=settings.CHAT["DRAFT_TTL_SECONDS"],
        )
    except (RedisError, OSError) as exc:
        # This socket goes on with it; only a resume before its first message would fail.
        log.warning("could not keep the draft of %s (%s)", conversation.pk, type(exc).__name__)


async def find(*, conversation_id: str, token: str) -> Conversation | None:
    """The unsaved conversation if `token` is its access token, else None (as for stored
    ones, an unknown id and a wrong token look alike)."""
    try:
        pk = uuid.UUID(str(conversation_id))
        raw = await get_redis().get(_key(pk))
    except ValueError:
        return None
    except (RedisError, OSError):
        return None
    fields = json.loads(raw) if raw else {"token_hash": "0" * 64}
    if not hmac.compare_digest(hash_token(token), fields["token_hash"]) or not raw:
        return None
    until = fields.get("customer_verified_until")
    fields["customer_verified_until"] = parse_datetime(until) if until else None
    return Conversation(pk=pk, **fields)


async def forget(conversation_id) -> None:
    try:
        await get_redis().delete(_key(conversation_id))
    except (RedisError, OSError):
        pass  # it expires
