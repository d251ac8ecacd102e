"""Reads the scorecard needs beside the answers themselves."""

from django.db.models import Count

from chat import selectors
from chat.knowledge import selectors as knowledge_selectors
from chat.models import BotProfile, Conversation, Message, Site


def sample_loaded() -> bool:
    """Whether the sample help centre (import_knowledge --sample) is in the knowledge base."""
    return knowledge_selectors.sample_articles().exists()


def profile_for_site(site: Site | None) -> BotProfile:
    """The bot profile a new conversation of `site` answers with."""
    return selectors.bot_profile_for(
        Conversation(site=site, bot_profile_id=site.bot_profile_id if site else None)
    )


def answer_models(message_ids: list[int]) -> dict[str, int]:
    """Who wrote these bot messages, and how many each: the worker names its model on every
    answer, and the product its own words ("guard", "fallback-rules")."""
    rows = (
        Message.objects.filter(pk__in=message_ids)
        .exclude(model_name="")
        .values("model_name")
        .annotate(count=Count("id"))
        .order_by("-count", "model_name")
    )
    return {row["model_name"]: row["count"] for row in rows}
