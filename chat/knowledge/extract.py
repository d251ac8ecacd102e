"""The help centre's own words for a question: the statements of the passages found that say
most about it, quoted as an answer when the model's answer cannot be used.

A small model given the right passage still gets its figures wrong ("approximately 2 business
days" from a table row that says 1–2) or only repeats the question. When the answer run
rejects such an answer (chat/guards.py), quoting the passage's best statements gives the
customer what the help centre says, rather than an apology:

    statements = key_statements(question, hits)   # best first, at most two
    text = quoted_answer(statements, language)

A statement is a sentence, a list item, or a table row read with its header ("Netherlands,
Belgium, Germany: 1–2 business days"). It is ranked by the question's terms it holds,
weighted by how rare they are in the knowledge base; terms found only in its title and
headings count for half: they say what the whole section is about, not this line. A
question that asks for a figure ("how long", "多少天") is answered by a statement that states
one (a duration, for "how long" and "几天"), and one that asks which ones ("Which delivery
companies...?", 哪几家) by a statement that names several: those count half as much again.
"""

import re
from dataclasses import dataclass

from chat import guards
from chat.knowledge import retrieval, segment
from chat.knowledge.retrieval import Hit

# Statements quoted at most, and the share of the best one's weight another needs to be
# quoted beside it: a second statement that shares only a common word is noise.
MAX_STATEMENTS = 2
SECOND_SHARE = 0.6
# The weight of a statement with a figure, for a question that asks for one.
FIGURE_BOOST = 1.5
_ASKS_DURATION = re.compile(
    r"\bhow (?:long|soon|fast|quickly)\b|\bwhen\b|\bhow many (?:days|weeks|hours|months|years)\b"
    r"|多久|多长|几天|多少天|几个工作日|多少个工作日|什么时候|何时",
    re.IGNORECASE,
)
_ASKS_WHICH = re.compile(r"\bwhich\b|\bwhat \w+ (?:do|does|are)\b|哪几|哪些|哪家", re.IGNORECASE)
# Two names or more: "(PostNL, DHL or UPS)", "Visa, Mastercard".
_NAMES = re.compile(r"[A-Z][\w&'-]*[A-Za-z](?:.{1,6}?[A-Z][\w&'-]*[A-Za-z])+")
_DURATION_UNIT = re.compile(
    r"\b(?:days?|hours?|weeks?|months?|years?)\b|工作日|天|小时|周|个月|年", re.IGNORECASE
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？；])")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_HEADING = re.compile(r"^\s*#{1,6}\s")


@dataclass(frozen=True, slots=True)
class Statement:
    text: str
    title: str  # the article's title, with the section's heading when there is one
    weight: float
    source: Hit | None = None  # the passage it is from


def statements_of(passage: str) -> list[tuple[str, str]]:
    """The passage's statements in order, each with the words of its table header ("" outside
    tables): sentences (of paragraphs hard-wrapped over several lines), list items, table rows
    read with their header row. Headings are left out (the passage's title carries them)."""
    blocks: list[tuple[str, str]] = []  # (text, header words)
    paragraph: list[str] = []
    header: list[str] | None = None

    def end_paragraph():
        if paragraph:
            blocks.append((_joined_lines(paragraph), ""))
            paragraph.clear()

    for line in passage.splitlines():
        line = line.strip()
        if line.startswith("|"):
            end_paragraph()
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if _TABLE_RULE.match(line):
                continue
            if header is None:
                header = cells
            else:
                blocks.append((_row(header, cells), " ".join(header)))
            continue
        header = None
        if not line or _HEADING.match(line) or _LIST_MARK.match(line):
            end_paragraph()
        if line and not _HEADING.match(line):
            paragraph.append(_LIST_MARK.sub("", line))
    end_paragraph()
    out = []
    for text, header_words in blocks:
        if header_words:
            out.append((text, header_words))
        else:
            out.extend((piece.strip(), "") for piece in _SENTENCE_END.split(text) if piece.strip())
    return out


def _joined_lines(lines: list[str]) -> str:
    """A paragraph's lines as one: a space between Latin words, none between Chinese ones."""
    text = lines[0]
    for line in lines[1:]:
        text += ("" if segment.has_chinese(text[-1:] + line[:1]) else " ") + line
    return text


def _row(header: list[str], cells: list[str]) -> str:
    """A table row as a statement: "Rest of the world: 5–12 business days" for two columns,
    the other columns named by their header when there are more."""
    if len(cells) == 2:
        return f"{cells[0]}: {cells[1]}"
    named = [
        f"{name} {cell}" if name else cell
        for name, cell in zip(header[1:], cells[1:], strict=False)
    ]
    return f"{cells[0]}: " + "; ".join(named)


def key_statements(
    question: str, hits: list[Hit], *, limit: int = MAX_STATEMENTS
) -> list[Statement]:
    """The statements of `hits` that say most about `question`, best first; [] when none
    holds any of its terms."""
    asked = set(segment.terms(question))
    if not asked or not hits:
        return []
    weights = retrieval.term_weights(asked)
    wants_figure = guards.asks_for_figure(question)
    wants_duration = bool(_ASKS_DURATION.search(question))
    wants_names = bool(_ASKS_WHICH.search(question))
    found: list[Statement] = []
    for hit in hits:
        title = f"{hit.title} > {hit.heading}" if hit.heading else hit.title
        labels = set(segment.terms(f"{hit.title}\n{hit.heading}")) & asked
        # An article's lead (the passage above its first heading) says what the page covers
        # ("This page explains how long delivery takes"), seldom the answer: half weight.
        lead = 0.5 if not hit.heading else 1.0
        for statement, header_words in statements_of(hit.text):
            terms = segment.terms(f"{statement} {header_words}")
            own = set(terms) & asked
            if not own:
                continue
            weight = lead * (
                sum(weights[t] for t in own) + 0.5 * sum(weights[t] for t in labels - own)
            )
            if (wants_figure and _states_figure(statement, duration=wants_duration)) or (
                wants_names and _NAMES.search(statement[1:])
            ):
                weight *= FIGURE_BOOST
            found.append((weight, -len(terms), Statement(statement, title, weight, hit)))
    # Ties go to the shorter statement (more about the question's terms), then to the
    # passages' order (the sort is stable).
    found.sort(key=lambda item: (-item[0], -item[1]))
    found = [statement for _, _, statement in found]
    if not found:
        return []
    best = found[0].weight
    return [s for s in found[:limit] if s.weight >= SECOND_SHARE * best]


def _states_figure(statement: str, *, duration: bool) -> bool:
    """Whether the statement states a figure (a duration, with `duration`): "1–2 business
    days" answers "how long", a price of 9.95 euros does not."""
    if not guards.figures(statement):
        return False
    return not duration or bool(_DURATION_UNIT.search(statement))


_LEAD = {
    "en": "Here is what our help centre says ({title}):",
    "zh": "帮助中心的说明（{title}）：",
}


def quoted_answer(statements: list[Statement], language: str) -> str:
    """The statements as the answer, in the conversation's language, naming where they are
    from; "" when there are none."""
    if not statements:
        return ""
    chinese = (language or "").lower().startswith("zh")
    lead = _LEAD["zh" if chinese else "en"].format(title=statements[0].title)
    ends, glue = ("。！？；", "") if chinese else (".!?", " ")
    said = [
        s.text if s.text[-1] in ends else s.text + ("。" if chinese else ".") for s in statements
    ]
    return lead + ("" if chinese else " ") + glue.join(said)
