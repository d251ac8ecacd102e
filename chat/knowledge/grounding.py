"""Grounding an answer in the knowledge base: the passages that answer the customer's question
go to the worker with the rule to answer from them, and the articles of the passages the
model saw go with the answer as its sources.

The worker adds the passages to the system prompt, as many as its token budget holds beside
the newest message (inference_worker.protocol.Grounding); they are bounded here as well
(KNOWLEDGE["PROMPT_PASSAGES"] passages, KNOWLEDGE["PROMPT_CHARS"] characters in all).
"""

from dataclasses import dataclass

from django.conf import settings

from chat.knowledge import extract
from chat.knowledge.retrieval import Hit
from inference_worker import protocol

GROUNDED = (
    "Answer from the help-centre passages below when they cover the question, and keep to "
    "them: never invent policies, prices, dates or promises they do not state. If they do not "
    "cover the question, say so briefly."
)
# Said after GROUNDED when the passages hold statements about the question's terms: a small
# model given three passages copies a figure from the wrong line ("2 business days" beside a
# table that says 1–2 for Germany); told the line first, it copies that one.
KEY_LINES = "The lines that answer it best: {lines}"
NOTHING_FOUND_OFFER_HUMAN = (
    "No help-centre article covers the customer's question. Say so briefly, do not guess at "
    "the company's policies, and offer to connect them with a human agent."
)


@dataclass(frozen=True)
class Grounded:
    system_prompt: str
    grounding: protocol.Grounding | None  # for the request; None: no passages
    sources: list[dict]  # per passage: {"article_id", "title", "url"}

    def sources_of(self, kept: int) -> list[dict]:
        """The articles of the first `kept` passages (those the model saw), each once."""
        seen, sources = set(), []
        for source in self.sources[:kept]:
            if source["article_id"] not in seen:
                seen.add(source["article_id"])
                sources.append(source)
        return sources


def ground(
    system_prompt: str,
    hits: list[Hit] | None,
    *,
    offer_human_when_nothing: bool,
    question: str = "",
) -> Grounded:
    """`hits` None: the knowledge base has nothing for this site (no claim that nothing was
    found); [] : nothing relevant found. With `question`, the statements that answer it best
    are named after the rule (KNOWLEDGE["PROMPT_KEY_LINES"])."""
    cfg = settings.KNOWLEDGE
    if not hits:
        if hits is not None and offer_human_when_nothing:
            return Grounded(f"{system_prompt}\n\n{NOTHING_FOUND_OFFER_HUMAN}", None, [])
        return Grounded(system_prompt, None, [])
    if question and cfg["PROMPT_LINES_ONLY"]:
        lines = extract.key_statements(question, hits[: cfg["PROMPT_PASSAGES"]])
        if lines:
            return _lines_only(system_prompt, lines)
    budget, passages, sources = cfg["PROMPT_CHARS"], [], []
    for number, hit in enumerate(hits[: cfg["PROMPT_PASSAGES"]], start=1):
        title = f"{hit.title} > {hit.heading}" if hit.heading else hit.title
        passage = f"[{number}] {title}\n{hit.text.strip()}"
        if len(passage) > budget:
            if passages:
                break
            passage = passage[:budget]  # the best passage, cut to fit, rather than nothing
        budget -= len(passage)
        passages.append(passage)
        sources.append({"article_id": hit.article_id, "title": hit.title, "url": hit.source_url})
    instruction = GROUNDED
    if question and cfg["PROMPT_KEY_LINES"]:
        shown = hits[: len(passages)]
        lines = extract.key_statements(question, shown)
        if lines:
            instruction += "\n" + KEY_LINES.format(
                lines=" ".join(f"\u201c{line.text}\u201d" for line in lines)
            )
    return Grounded(system_prompt, {"instruction": instruction, "passages": passages}, sources)


def _lines_only(system_prompt: str, lines: list[extract.Statement]) -> Grounded:
    """The statements that say most about the question as the passages, each with its
    article and section: a small model given whole passages copies from the wrong line."""
    passages = [
        f"[{number}] {line.title}\n{line.text}" for number, line in enumerate(lines, start=1)
    ]
    sources = [
        {
            "article_id": line.source.article_id,
            "title": line.source.title,
            "url": line.source.source_url,
        }
        for line in lines
    ]
    return Grounded(system_prompt, {"instruction": GROUNDED, "passages": passages}, sources)
