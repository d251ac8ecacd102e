"""When a customer's words ask for a human: "转人工", "I want to talk to a human", or "yes"
right after the bot offered an agent. Phrases come from settings (CHAT_HANDOFF_*)."""

import re
import unicodedata

from chat.punctuation import is_cjk

# A long message that merely mentions an "agent" (a user-agent string, a travel agent) is not
# a request for one: Latin phrases count only in short messages.
_SHORT = 80


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^\w\s]", " ", text).strip()


def _contains(text: str, phrase: str) -> bool:
    phrase = _normalize(phrase)
    if not phrase:
        return False
    if any(is_cjk(char) for char in phrase):
        return phrase in text
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def asks_for_human(text: str, phrases: list[str]) -> bool:
    normalized = _normalize(text)
    return any(
        _contains(normalized, phrase)
        and (len(normalized) <= _SHORT or any(is_cjk(char) for char in phrase))
        for phrase in phrases
    )


def is_affirmative(reply: str, affirmatives: list[str]) -> bool:
    """A short yes ("yes", "ok please", "好的"), whatever it answers."""
    return _normalize(reply) in {_normalize(a) for a in affirmatives}


def accepts_offer(
    reply: str, previous_bot_text: str, *, offers: list[str], affirmatives: list[str]
) -> bool:
    """A short yes to a bot answer that offered a human."""
    if not previous_bot_text or not any(
        _contains(_normalize(previous_bot_text), o) for o in offers
    ):
        return False
    return is_affirmative(reply, affirmatives)
