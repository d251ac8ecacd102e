"""Fine-tuning data from rated bot answers: chat lines for supervised fine-tuning (SFT) and
preference pairs for DPO, as JSON Lines (UTF-8, one object a line).

Chat line, one per exported answer:

    {"messages": [{"role": "system", "content": ...}, ...context turns...,
                  {"role": "user", "content": ...}, {"role": "assistant", "content": <answer>}]}

    Every message before the last is exactly what the model saw for that answer
    (`Message.prompt`: the rendered system prompt and the context turns kept within the token
    budget, ending with the user turn answered); the last is the answer itself.

Preference pair, one per thumbs-down answer that a human agent answered next:

    {"prompt": [<Message.prompt, as above>], "chosen": <the agent's reply>,
     "rejected": <the bot's answer>}

Which answers (`Selection`): bot answers rated thumbs-up (thumbs="up", the default) or all not
rated thumbs-down (thumbs="any", best with min_csat), optionally only from conversations whose
CSAT is at least min_csat, in a date range (the answer's day), a site, a language. Skipped and
counted: playground conversations, fallback answers (the rules answered, not the model), partial
answers (cut off), answers without a stored prompt or with a malformed one. Identical lines are
written once. Every text of every line, the system prompt included, is scrubbed of personal data
first (`chat.pii`). A conversation's lines all go to one split, chosen by a hash of its id.

`manage.py export_finetune` writes the files; `archive` makes them one ZIP archive (the
admin's download).
"""

import datetime as dt
import hashlib
import io
import json
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from chat.models import Conversation, Feedback, Message
from chat.pii import Scrubber

THUMBS_UP = "up"
THUMBS_ANY = "any"
DEFAULT_VALIDATION_FRACTION = 0.1
Split = Literal["train", "validation"]
PROMPT_ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class Selection:
    """Which answers to export; empty fields do not filter."""

    since: dt.date | None = None
    until: dt.date | None = None
    site_key: str = ""
    language: str = ""  # a prefix of the BCP 47 tag: "zh" matches zh and zh-CN
    thumbs: str = THUMBS_UP
    min_csat: int | None = None
    # The admin's selected conversations; None for all.
    conversations: QuerySet[Conversation] | None = None


@dataclass
class ExportStats:
    selected: int = 0
    train: int = 0
    validation: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    pairs: int = 0
    pairs_skipped: Counter[str] = field(default_factory=Counter)
    pair_duplicates: int = 0
    pii: Counter[str] = field(default_factory=Counter)


# --- Reads --------------------------------------------------------------------------------


def rated_answers(selection: Selection) -> QuerySet[Message]:
    """Bot answers the selection names, oldest conversation first, playground ones included
    (they are skipped, and counted, by `skip_reason`)."""
    answers = _answers(selection)
    if selection.thumbs == THUMBS_UP:
        answers = answers.filter(feedback__rating=Feedback.Rating.UP)
    elif selection.thumbs == THUMBS_ANY:
        answers = answers.exclude(feedback__rating=Feedback.Rating.DOWN)
    else:
        raise ValueError(f"thumbs must be {THUMBS_UP!r} or {THUMBS_ANY!r}")
    if selection.min_csat is not None:
        answers = answers.filter(conversation__csat_score__gte=selection.min_csat)
    return answers


def corrected_answers(selection: Selection) -> QuerySet[Message]:
    """Thumbs-down answers whose next message (system notes aside) is a human agent's, with
    that reply as `correction`. Thumbs and CSAT of the selection do not apply: the pair is the
    rating and the correction."""
    following = (
        Message.objects.filter(conversation=OuterRef("conversation"), id__gt=OuterRef("id"))
        .exclude(role=Message.Role.SYSTEM)
        .order_by("id")
    )
    return (
        _answers(selection)
        .filter(feedback__rating=Feedback.Rating.DOWN)
        .annotate(
            next_role=Subquery(following.values("role")[:1]),
            correction=Subquery(following.values("text")[:1]),
        )
        .filter(next_role=Message.Role.AGENT)
        .exclude(correction="")
    )


def _answers(selection: Selection) -> QuerySet[Message]:
    answers = Message.objects.filter(role=Message.Role.BOT)
    if selection.conversations is not None:
        # Only the ids: the caller's queryset may carry annotations or joins (the admin's do).
        answers = answers.filter(conversation__in=selection.conversations.values("pk"))
    if selection.since:
        answers = answers.filter(created_at__date__gte=selection.since)
    if selection.until:
        answers = answers.filter(created_at__date__lte=selection.until)
    if selection.site_key:
        answers = answers.filter(conversation__site__key=selection.site_key)
    if selection.language:
        prefix = selection.language
        answers = answers.filter(
            Q(conversation__language__iexact=prefix)
            | Q(conversation__language__istartswith=prefix + "-")
        )
    return answers.select_related("conversation").order_by(
        "conversation__created_at", "conversation_id", "id"
    )


# --- Lines --------------------------------------------------------------------------------


def skip_reason(answer: Message) -> str | None:
    """Why an answer is not training data, or None when it is."""
    if answer.conversation.channel == Conversation.Channel.PLAYGROUND:
        return "playground"
    if answer.is_fallback:
        return "fallback"
    if answer.is_partial:
        return "partial"
    if not answer.prompt:
        return "no prompt"
    if not _well_formed(answer.prompt):
        return "malformed prompt"
    if not answer.text.strip():
        return "empty answer"
    return None


def _well_formed(prompt: Any) -> bool:
    return (
        isinstance(prompt, list)
        and all(
            isinstance(m, dict)
            and m.get("role") in PROMPT_ROLES
            and isinstance(m.get("content"), str)
            for m in prompt
        )
        and prompt[-1]["role"] == "user"
    )


def scrubber_for(conversation: Conversation) -> Scrubber:
    return Scrubber(
        names=[conversation.customer_name],
        emails=[conversation.customer_email],
        language=conversation.language,
    )


def prompt_messages(answer: Message, scrubber: Scrubber) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": scrubber.scrub(m["content"])} for m in answer.prompt]


def chat_line(answer: Message, scrubber: Scrubber) -> dict[str, Any]:
    return {
        "messages": [
            *prompt_messages(answer, scrubber),
            {"role": "assistant", "content": scrubber.scrub(answer.text)},
        ]
    }


def pair_line(answer: Message, scrubber: Scrubber) -> dict[str, Any]:
    """`answer` must come from `corrected_answers` (it carries the agent's `correction`)."""
    return {
        "prompt": prompt_messages(answer, scrubber),
        "chosen": scrubber.scrub(answer.correction),
        "rejected": scrubber.scrub(answer.text),
    }


def dumps(line: dict[str, Any]) -> str:
    """One JSONL line; Chinese stays readable rather than \\u-escaped."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def split_of(conversation_id: Any, validation_fraction: float) -> Split:
    """The same conversation always lands in the same split, from run to run and machine to
    machine (unlike Python's salted hash())."""
    digest = hashlib.sha256(str(conversation_id).encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if position < validation_fraction else "train"


def validation_path(path: Path) -> Path:
    """out.jsonl → out.valid.jsonl (out → out.valid)."""
    return path.with_name(f"{path.stem}.valid{path.suffix}")


def chat_lines(
    answers: Iterable[Message], *, stats: ExportStats, validation_fraction: float = 0.0
) -> Iterator[tuple[Split, str]]:
    """(split, JSONL line) for each answer that is training data, once per distinct line."""
    seen: set[bytes] = set()
    for answer in answers:
        stats.selected += 1
        reason = skip_reason(answer)
        if reason:
            stats.skipped[reason] += 1
            continue
        scrubber = scrubber_for(answer.conversation)
        line = dumps(chat_line(answer, scrubber))
        # Compared after scrubbing: lines that differ only in a customer's details are the same
        # training example.
        if _seen_before(line, seen):
            stats.duplicates += 1
            continue
        stats.pii.update(scrubber.counts)
        split = split_of(answer.conversation_id, validation_fraction)
        setattr(stats, split, getattr(stats, split) + 1)
        yield split, line


def pair_lines(answers: Iterable[Message], *, stats: ExportStats) -> Iterator[str]:
    """A JSONL line for each corrected answer (from `corrected_answers`), once per distinct
    line."""
    seen: set[bytes] = set()
    for answer in answers:
        reason = skip_reason(answer)
        if reason:
            stats.pairs_skipped[reason] += 1
            continue
        scrubber = scrubber_for(answer.conversation)
        line = dumps(pair_line(answer, scrubber))
        if _seen_before(line, seen):
            stats.pair_duplicates += 1
            continue
        stats.pii.update(scrubber.counts)
        stats.pairs += 1
        yield line


def _seen_before(line: str, seen: set[bytes]) -> bool:
    """Remembers a digest, not the line: an export can hold more text than memory."""
    digest = hashlib.blake2b(line.encode(), digest_size=16).digest()
    if digest in seen:
        return True
    seen.add(digest)
    return False


# --- Summary ------------------------------------------------------------------------------


def summary_lines(
    stats: ExportStats, *, train: str | Path, valid: str | Path | None, pairs: str | Path | None
) -> list[str]:
    """What an export wrote and left out, a line each; the files named as given."""
    lines = [
        f"Selected {stats.selected} answers.",
        f"Exported {stats.train + stats.validation} lines: {stats.train} train -> {train}"
        + (f", {stats.validation} validation -> {valid}" if valid else ""),
        f"Skipped {stats.skipped.total()}" + _by_reason(stats.skipped),
        f"Duplicates dropped: {stats.duplicates}",
    ]
    if pairs:
        lines.append(
            f"Preference pairs: {stats.pairs} -> {pairs}; skipped "
            f"{stats.pairs_skipped.total()}{_by_reason(stats.pairs_skipped)}; "
            f"duplicates dropped: {stats.pair_duplicates}"
        )
    lines.append(f"PII replaced: {stats.pii.total()}" + _by_reason(stats.pii))
    return lines


def _by_reason(counts: Counter[str]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) + ")"


# --- One ZIP archive (the admin's download) ------------------------------------------------

TRAIN_NAME, VALID_NAME, PAIRS_NAME, SUMMARY_NAME = (
    "train.jsonl",
    "valid.jsonl",
    "pairs.jsonl",
    "summary.txt",
)
_SPOOL_BYTES = 1024 * 1024  # validation lines held in memory before they go to a file


class _Sink(io.RawIOBase):
    """Where the archive is written: bytes collected until taken. Not seekable, so zipfile
    writes each entry's sizes after its data, and the archive streams as it is made."""

    def __init__(self):
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _entry(name: str) -> zipfile.ZipInfo:
    """An entry dated now, in the desk's time zone like the file's name (one opened by name
    alone is dated 1980), compressed."""
    entry = zipfile.ZipInfo(name, date_time=timezone.localtime().timetuple()[:6])
    entry.compress_type = zipfile.ZIP_DEFLATED
    return entry


def archive(
    selection: Selection, *, batch: int, validation_fraction: float = DEFAULT_VALIDATION_FRACTION
) -> Iterator[bytes]:
    """The export of `manage.py export_finetune --pairs` as one ZIP archive, in parts as it is
    made: train.jsonl, valid.jsonl, pairs.jsonl and summary.txt (the command's summary).
    `batch`: answers a database round trip fetches."""
    stats = ExportStats()
    sink = _Sink()
    # Lines come train and validation mixed, and an archive writes one entry at a time: the
    # validation lines (a tenth) wait in a file that spills to disk past _SPOOL_BYTES.
    # Every entry is made by _entry, which sets its compression.
    with (
        zipfile.ZipFile(sink, "w") as archive_file,
        tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as held,
    ):
        with archive_file.open(_entry(TRAIN_NAME), "w", force_zip64=True) as train:
            answers = rated_answers(selection).iterator(chunk_size=batch)
            for split, line in chat_lines(
                answers, stats=stats, validation_fraction=validation_fraction
            ):
                (train if split == "train" else held).write(line.encode() + b"\n")
                yield sink.take()
        with archive_file.open(_entry(VALID_NAME), "w", force_zip64=True) as valid:
            held.seek(0)
            shutil.copyfileobj(held, valid)
        yield sink.take()
        with archive_file.open(_entry(PAIRS_NAME), "w", force_zip64=True) as pairs:
            for line in pair_lines(
                corrected_answers(selection).iterator(chunk_size=batch), stats=stats
            ):
                pairs.write(line.encode() + b"\n")
                yield sink.take()
        archive_file.writestr(
            _entry(SUMMARY_NAME),
            "\n".join(summary_lines(stats, train=TRAIN_NAME, valid=VALID_NAME, pairs=PAIRS_NAME))
            + "\n",
        )
    yield sink.take()
