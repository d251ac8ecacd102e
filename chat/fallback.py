"""The rule engine that answers when the model cannot: timed out, failed, or no worker is up.

A customer is never left without an answer: admin-managed rules first, then a built-in apology
in the customer's language that promises a human follow-up.
"""

from dataclasses import dataclass

from chat import selectors

# Why the model did not answer; stored as the fallback message's finish reason.
REASON_UNAVAILABLE = "unavailable"  # no inference worker is running
REASON_TIMEOUT = "timeout"  # a deadline passed
REASON_ERROR = "error"  # the worker reported an error
REASON_BUSY = "busy"  # every worker slot and the queue in front of them are full
REASON_WORKER_LOST = "worker_lost"  # the worker went silent mid-answer (it died)

_BUILT_IN = {
    "en": "Sorry, our assistant can't answer right now. Your message is saved and a member of "
    "our team will get back to you here as soon as possible.",
    "zh": "抱歉，智能助手暂时无法回答。您的消息已保存，我们的客服人员会尽快在这里回复您。",
}


@dataclass(frozen=True)
class Rule:
    keywords: tuple[str, ...]
    language: str
    answer: str

    def matches(self, text: str, language: str) -> bool:
        if self.language and not _lang_prefix(language).startswith(self.language.lower()):
            return False
        if not self.keywords:
            return True
        lowered = text.casefold()
        return any(keyword in lowered for keyword in self.keywords)


def _lang_prefix(language: str) -> str:
    return (language or "en").split("-")[0].lower()


def load_rules() -> list[Rule]:
    return [
        Rule(
            keywords=tuple(k.strip().casefold() for k in row.keywords.split(",") if k.strip()),
            language=row.language.strip(),
            answer=row.answer,
        )
        for row in selectors.enabled_fallback_rules()
    ]


def choose_answer(rules: list[Rule], *, text: str, language: str) -> str:
    for rule in rules:
        if rule.matches(text, language):
            return rule.answer
    return _BUILT_IN.get(_lang_prefix(language), _BUILT_IN["en"])
