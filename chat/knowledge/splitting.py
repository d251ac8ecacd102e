"""Markdown articles into passages: one per section under its headings, long sections cut
between paragraphs (then sentences), so each passage is a focused piece a prompt can quote."""

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# After a full stop in either script; Chinese needs no space after its punctuation.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")
HEADING_SEPARATOR = " > "


@dataclass(frozen=True, slots=True)
class Section:
    heading: str  # the heading path below the title, "" for the text before the first heading
    text: str


def split_title(markdown: str) -> tuple[str, str]:
    """(title, body): the first `# ` line is the title and leaves the body; ("", text) when the
    text has no such line before its first other heading or paragraph."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        match = _HEADING.match(line)
        if match and len(match.group(1)) == 1:
            return match.group(2).strip(), "\n".join(lines[i + 1 :]).strip("\n")
        break
    return "", markdown.strip("\n")


def split_sections(body: str, *, max_chars: int) -> list[Section]:
    """The passages of a Markdown body (its title already taken off), in order; empty
    sections (a heading straight followed by a sub-heading) give none."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        text = "\n".join(lines).strip()
        lines.clear()
        if text:
            heading = HEADING_SEPARATOR.join(title for _, title in stack)
            sections.extend(Section(heading, piece) for piece in _cut(text, max_chars))

    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        flush()
        level = len(match.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, match.group(2).strip()))
    flush()
    return sections


def _cut(text: str, max_chars: int) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if len(paragraphs) > 1:
        return _pack(paragraphs, max_chars, "\n\n", lambda p: _cut(p, max_chars))
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    if len(sentences) > 1:
        return _pack(sentences, max_chars, None, lambda s: _hard_cut(s, max_chars))
    return _hard_cut(text, max_chars)


def _pack(parts: list[str], max_chars: int, joiner: str | None, too_long) -> list[str]:
    """Consecutive parts joined while they fit; a part too long on its own is cut further.
    Sentences (joiner None) are joined by a space, or by nothing after Chinese punctuation."""
    out: list[str] = []
    current = ""
    for part in parts:
        glue = joiner if joiner is not None else ("" if current[-1:] in "。！？；" else " ")
        if len(part) > max_chars:
            if current:
                out.append(current)
                current = ""
            out.extend(too_long(part))
        elif not current:
            current = part
        elif len(current) + len(glue) + len(part) <= max_chars:
            current += glue + part
        else:
            out.append(current)
            current = part
    if current:
        out.append(current)
    return out


def _hard_cut(text: str, max_chars: int) -> list[str]:
    return [
        text[i : i + max_chars].strip()
        for i in range(0, len(text), max_chars)
        if text[i : i + max_chars].strip()
    ]
