"""What a question asks about, when a page that answers it must name it.

BM25 finds the page that shares a question's words, and some questions share their words with
a page while asking about something else: "Is the green Acorn Home desk lamp in stock?" names
the lamp that the warranty page names; "你们在招聘吗？我想去你们仓库工作" (are you hiring? I'd like
to work in your warehouse) shares 仓库 and 工作 with "5 working days after the item reaches our
warehouse". Both scored as relevant, and a small model then answered "No, it's not in stock"
and "是的，我们正在招聘" from pages that say neither. For the topics customers ask a help centre
about that its pages often do not cover (stock, jobs, opening hours, phone, shops), the
question's words say what is asked; a passage is relevant to such a question only when it
names the topic too. Measured on the scorecard (`manage.py eval_answers`) and on
`manage.py eval_knowledge`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

from chat.knowledge import segment


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    asked: re.Pattern[str]  # in the question (NFKC, case-folded): it asks about the topic
    words: tuple[str, ...]  # a passage naming one of these names the topic

    @property
    def terms(self) -> frozenset[str]:
        return _terms_of(self.words)


@cache
def _terms_of(words: tuple[str, ...]) -> frozenset[str]:
    # A word's own term only: a Chinese word's single characters (库 of 库存, 货 of 有货) are in
    # every other page.
    return frozenset(segment.terms(word)[0] for word in words if segment.terms(word))


TOPICS = (
    Topic(
        "stock",
        re.compile(
            r"\b(?:in|out of|back in) stock\b|\bstock (?:level|status)|\bsold out\b|\brestock"
            r"|有货|现货|库存|缺货|断货|补货|到货了吗"
        ),
        ("stock", "restock", "sold out", "库存", "有货", "现货", "缺货", "断货", "补货"),
    ),
    Topic(
        "jobs",
        re.compile(
            r"\bhiring\b|\bjobs?\b|\bcareers?\b|\bvacanc(?:y|ies)\b|\binternships?\b"
            r"|招聘|应聘|求职|招人|工作机会|职位|实习"
        ),
        (
            "hiring",
            "job",
            "career",
            "vacancy",
            "internship",
            "招聘",
            "应聘",
            "求职",
            "职位",
            "实习",
        ),
    ),
    Topic(
        "opening_hours",
        re.compile(
            r"\bopening (?:hours|times)\b|\bwhat time do you (?:open|close)\b"
            r"|\bwhen (?:are|do) you (?:open|close)\b|营业时间|几点开门|几点关门|开门时间"
        ),
        ("opening", "open", "营业时间", "开门", "营业"),
    ),
    Topic(
        "phone",
        re.compile(
            r"\bphone number\b|\btelephone\b|\bcall you\b|\bhotline\b"
            r"|电话|热线|打给你们"
        ),
        ("phone", "telephone", "call", "hotline", "电话", "热线"),
    ),
    Topic(
        "shop",
        re.compile(
            r"\b(?:physical|bricks?[- ]and[- ]mortar|retail) (?:shop|store)s?\b|\bshowrooms?\b"
            r"|\b(?:shop|store) (?:in|near)\b|实体店|门店|线下店|专卖店"
        ),
        ("showroom", "store", "shop", "实体店", "门店", "线下店", "专卖店"),
    ),
)


def asked(question: str) -> tuple[Topic, ...]:
    """The topics `question` asks about, of those a passage must name to answer it."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return tuple(topic for topic in TOPICS if topic.asked.search(text))
