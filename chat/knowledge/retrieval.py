"""Finding the passages that answer a question: BM25 (bm25s) over every published passage,
one index in memory per process, rebuilt when the knowledge version changes.

    hits = await search(question="Where is my parcel?", site_id=site.pk, language="en")

A hit is a passage of a published article of the question's site or of all sites, never of
another site. Passages in the question's language come first; when none of them is relevant,
other languages may answer (a question tagged with the wrong language still finds its page).
An unrelated question gets [] rather than the least bad passage, because a hit tells the
model that a passage covers the question, and the bot profile's "not covered" path (a human,
or a general answer) is the right one when none does. "Covered" means a passage addresses the
question's topic, also to say no: the page that lists every payment method covers "Can I pay
with Bitcoin?"; a page on late parcels that says "within 48 hours" does not cover "What are
your opening hours?". Words are all a lexical index has to tell them apart, so a hit must
(KNOWLEDGE settings):
- cover a share of the question's terms, weighted by idf, where words the knowledge base
  never uses count too ("a good pasta recipe" shares only "good" with a shop's pages);
- score a share of what a passage holding the whole question would score, so a passage that
  mentions a term in passing counts for less than one about it;
- share two terms with the question when the question has two the knowledge base uses, and
  have two of them in one statement (a sentence, a list item, a table row, with the title and
  headings): vocabulary scattered over unrelated sentences is a coincidence;
- name what the question asks about, for the topics a help centre's pages often leave out
  (stock, jobs, opening hours, phone, shops: chat/knowledge/topics.py): the warranty page
  names the lamp, and does not answer whether it is in stock.
What is left is measured by `manage.py eval_knowledge`, which lists the out-of-scope
questions that still get a hit: a customer's word the pages name differently, or a topic that
shares its words with one the pages do cover ("student discount" and the discount codes).
"""

import asyncio
import logging
import math
import re
import threading
import time
import weakref
from dataclasses import dataclass

import bm25s
import numpy as np
from django.conf import settings

from chat.knowledge import segment, selectors, topics, version
from chat.knowledge.selectors import PassageRow
from runtime.aio import db

# bm25s sets its own logger to DEBUG on import: one line per index build in every log.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# BM25 parameters: bm25s's defaults (Lucene's variant), which suit short help-centre passages.
K1 = 1.5
B = 0.75
MAX_LIMIT = 20
# Passages checked for the question's words meeting in one statement, best-scoring first: a
# bound on the work of a question made of common words in a large knowledge base. Below the
# hundred best, nothing is the answer.
MAX_CHECKED = 100


@dataclass(frozen=True, slots=True)
class Hit:
    passage_id: int
    article_id: int
    title: str
    source_url: str
    heading: str  # headings above the passage, "Refunds > How long it takes"; "" at the top
    text: str  # the passage's Markdown
    score: float  # BM25; comparable within one question only
    language: str
    slug: str


@dataclass(frozen=True, slots=True)
class Cut:
    """When a passage is relevant enough to be a hit (KNOWLEDGE settings)."""

    min_score: float
    min_coverage: float
    relative: float
    min_score_share: float = 0.0

    @classmethod
    def from_settings(cls) -> "Cut":
        cfg = settings.KNOWLEDGE
        return cls(
            cfg["MIN_SCORE"], cfg["MIN_COVERAGE"], cfg["RELATIVE_CUT"], cfg["MIN_SCORE_SHARE"]
        )


def index_text(row: PassageRow) -> str:
    # The title and headings are searched with the text: "refund" finds the Refunds section.
    return f"{row.title}\n{row.heading}\n{row.text}"


# Where one statement ends: a full stop in either script, a colon, a line (list items, table
# rows). Chinese needs no space after its punctuation.
_STATEMENT_END = re.compile(r"(?<=[.!?:;])\s+|(?<=[。！？；：])|\n+")


@dataclass(frozen=True, slots=True)
class Parsed:
    """A passage's terms (title, headings and text, in order: what BM25 counts) and, for each
    statement of its text, the set of terms said there together with the title and headings."""

    terms: list[str]
    statements: tuple[frozenset[str], ...]


def parse(row: PassageRow) -> Parsed:
    # The pieces are tokenized once: no term crosses a line or a full stop anyway.
    labels = segment.terms(f"{row.title}\n{row.heading}")
    pieces = [segment.terms(piece) for piece in _STATEMENT_END.split(row.text) if piece.strip()]
    label_set = frozenset(labels)
    return Parsed(
        terms=labels + [t for piece in pieces for t in piece],
        statements=tuple(label_set | frozenset(piece) for piece in pieces) or (label_set,),
    )


def _idf(df: np.ndarray | int, n: int):
    # Lucene's idf, as bm25s's method="lucene" scores with.
    return np.log(1 + (n - df + 0.5) / (df + 0.5))


class KnowledgeIndex:
    """A read-only BM25 index over passage rows. `search` is pure CPU, safe in any thread."""

    def __init__(self, rows: list[PassageRow], term_cache: dict[str, Parsed] | None = None):
        """Tokenizing is most of a build: passages seen before come from `term_cache`;
        `self.terms` is the cache for the next build (only the texts still present)."""
        self.rows = rows
        old = term_cache or {}
        self.terms: dict[str, Parsed] = {}
        self._statements: list[tuple[frozenset[str], ...]] = []
        corpus = []
        for row in rows:
            text = index_text(row)
            parsed = old.get(text)
            if parsed is None:
                parsed = parse(row)
            self.terms[text] = parsed
            corpus.append(parsed.terms)
            self._statements.append(parsed.statements)
        self.bm25: bm25s.BM25 | None = None
        if rows:
            self.bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
            self.bm25.index(corpus, show_progress=False)
            self._indptr = self.bm25.scores["indptr"]
            self._indices = self.bm25.scores["indices"]
            self._data = self.bm25.scores["data"]
        self._sites = np.array(
            [-1 if r.site_id is None else r.site_id for r in rows], dtype=np.int64
        )
        languages = sorted({r.language for r in rows})
        self._language_code = {lang: i for i, lang in enumerate(languages)}
        self._languages = np.array([self._language_code[r.language] for r in rows], dtype=np.int32)

    @property
    def empty(self) -> bool:
        return not self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def covers(self, site_id: int | None) -> bool:
        """Whether a question of this site could find anything: a passage of the site's own
        articles or of the articles for all sites."""
        return bool(((self._sites == -1) | (self._sites == (site_id or -2))).any())

    def search(
        self, *, question: str, site_id: int | None, language: str, limit: int = 3, cut: Cut
    ) -> list[Hit]:
        if self.bm25 is None:
            return []
        query = list(dict.fromkeys(segment.terms(question)))  # each term once
        if not query:
            return []
        n = len(self.rows)
        vocab = self.bm25.vocab_dict
        scores = np.zeros(n, dtype=np.float32)
        matched = np.zeros(n, dtype=np.float32)  # idf weight of the question's terms present
        present = np.zeros(n, dtype=np.int32)  # how many of the question's terms
        # A word the passages never use weighs as much as the rarest word they do.
        weight_total = 0.0
        known = 0  # terms of the question that some passage uses
        for term in query:
            token = vocab.get(term)
            if token is None:
                if term.isdigit():
                    continue  # the customer's own figure ("60 euros"), not a topic
                weight_total += float(_idf(1, n))
                continue
            start, end = self._indptr[token], self._indptr[token + 1]
            docs = self._indices[start:end]
            weight = float(_idf(end - start, n))
            weight_total += weight
            known += 1
            # bm25s keeps each term's BM25 contribution per passage in a CSC matrix: summing
            # the columns is its own scoring, done here so the coverage comes in the same pass.
            scores[docs] += self._data[start:end]
            matched[docs] += weight
            present[docs] += 1
        if not matched.any():
            return []
        allowed = self._sites == -1
        if site_id is not None:
            allowed |= self._sites == site_id
        # A term once in a passage of average length scores its idf, so weight_total is what
        # a passage holding the whole question would score: the share is comparable between
        # questions and knowledge bases, where a raw score is not.
        relevant = (
            allowed
            & (matched > 0)
            & (scores >= cut.min_score)
            & (matched >= cut.min_coverage * weight_total)
            & (scores >= cut.min_score_share * weight_total)
        )
        if known > 1:
            # One word in common is a coincidence when the question has other words the
            # knowledge base uses, just not there: "opening hours" and "within 24 hours". When
            # the rest are words it never uses ("Can I pay with Bitcoin?"), the one word is
            # all the question can share with it, and the page that lists the payment methods
            # is the one to answer from.
            relevant &= present > 1
        for topic in topics.asked(question):
            relevant &= self._naming(topic.terms)
        if not relevant.any():
            return []
        code = self._language_code.get(segment.primary_language(language))
        groups = (
            [relevant]
            if code is None
            else [relevant & (self._languages == code), relevant & (self._languages != code)]
        )
        terms = frozenset(query)
        limit = max(1, min(limit, MAX_LIMIT))
        for group in groups:  # the question's language first, the others if it has nothing
            found = [
                i
                for i in self._ranked(group, scores)
                if present[i] < 2 or self._said_together(i, terms)
            ][:limit]
            if found:
                best = float(scores[found[0]])
                return [
                    self._hit(i, float(scores[i]))
                    for i in found
                    if scores[i] >= cut.relative * best
                ]
        return []

    def weights(self, terms) -> dict[str, float]:
        """Each term's idf in this index; a term no passage uses weighs as the rarest one."""
        n = max(len(self.rows), 1)
        rarest = float(_idf(1, n))
        if self.bm25 is None:
            return dict.fromkeys(terms, rarest)
        vocab, out = self.bm25.vocab_dict, {}
        for term in terms:
            token = vocab.get(term)
            out[term] = (
                rarest
                if token is None
                else float(_idf(self._indptr[token + 1] - self._indptr[token], n))
            )
        return out

    def _naming(self, terms: frozenset[str]) -> np.ndarray:
        """Which passages hold one of `terms`."""
        naming = np.zeros(len(self.rows), dtype=bool)
        vocab = self.bm25.vocab_dict
        for term in terms:
            token = vocab.get(term)
            if token is not None:
                naming[self._indices[self._indptr[token] : self._indptr[token + 1]]] = True
        return naming

    def _ranked(self, group: np.ndarray, scores: np.ndarray) -> list[int]:
        """The passages of `group`, best first, at most MAX_CHECKED of them."""
        candidates = np.flatnonzero(group)
        if len(candidates) > MAX_CHECKED:  # the best ones without sorting them all
            candidates = candidates[
                np.argpartition(-scores[candidates], MAX_CHECKED - 1)[:MAX_CHECKED]
            ]
        return [int(i) for i in candidates[np.argsort(-scores[candidates], kind="stable")]]

    def _said_together(self, i: int, terms: frozenset[str]) -> bool:
        """Whether two of the question's terms meet in one statement of passage i (with its
        title and headings). A passage that has them only in separate statements shares
        vocabulary, not a topic: "we open an investigation" ... "within 48 hours" does not
        answer "What are your opening hours?"."""
        return any(len(statement & terms) >= 2 for statement in self._statements[i])

    def _hit(self, i: int, score: float) -> Hit:
        row = self.rows[i]
        return Hit(
            passage_id=row.passage_id,
            article_id=row.article_id,
            title=row.title,
            source_url=row.source_url,
            heading=row.heading,
            text=row.text,
            score=round(score, 3),
            language=row.language,
            slug=row.slug,
        )


_UNBUILT = object()


class IndexCache:
    """One process's index, rebuilt before a search when the knowledge version has changed
    (or, as a safety net for a bump lost to a Redis failure, when it is older than
    KNOWLEDGE["INDEX_MAX_AGE_SECONDS"]). Tests make two to play two processes."""

    def __init__(self):
        self.index = KnowledgeIndex([])
        self.version: object = _UNBUILT
        self.built_at = -math.inf
        self.builds = 0
        self._sync_lock = threading.Lock()
        # asyncio locks belong to one event loop; tests and commands run several.
        self._async_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _stale(self, current: str | None) -> bool:
        if self.version is _UNBUILT:
            return True
        if current is not None and current != self.version:
            return True
        max_age = settings.KNOWLEDGE["INDEX_MAX_AGE_SECONDS"]
        return max_age > 0 and time.monotonic() - self.built_at > max_age

    def _install(self, rows: list[PassageRow], current: str | None) -> None:
        # Searches under way keep the index they started with: it is never changed in place.
        self.index = KnowledgeIndex(rows, self.index.terms)
        self.version, self.built_at = current, time.monotonic()
        self.builds += 1

    # The version is read BEFORE the passages: an edit committed in between leaves the index
    # labelled with the older version, so the next search builds again.

    def current_sync(self) -> KnowledgeIndex:
        current = version.current_sync()
        if self._stale(current):
            with self._sync_lock:
                if self._stale(current):
                    self._install(selectors.passages_for_index(), current)
        return self.index

    async def current(self) -> KnowledgeIndex:
        current = await version.current()
        if self._stale(current):
            lock = self._async_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
            async with lock:  # one build for all the questions that arrive during it
                if self._stale(current):
                    rows = await db(selectors.passages_for_index)()
                    await asyncio.to_thread(self._install, rows, current)
        return self.index

    async def search(
        self, *, question: str, site_id: int | None, language: str, limit: int = 3
    ) -> list[Hit]:
        if not question.strip():
            return []
        index = await self.current()
        if index.empty:
            return []
        return await asyncio.to_thread(
            index.search,
            question=question,
            site_id=site_id,
            language=language,
            limit=limit,
            cut=Cut.from_settings(),
        )

    def search_sync(
        self, *, question: str, site_id: int | None, language: str, limit: int = 3
    ) -> list[Hit]:
        if not question.strip():
            return []
        return self.current_sync().search(
            question=question,
            site_id=site_id,
            language=language,
            limit=limit,
            cut=Cut.from_settings(),
        )


_process_cache = IndexCache()


async def search(*, question: str, site_id: int | None, language: str, limit: int = 3) -> list[Hit]:
    """The passages that answer `question` best, at most `limit`, best first; [] when nothing
    is relevant. For a question of `site_id` (None: a conversation of no site, which sees only
    the articles for all sites) in `language` (a BCP 47 tag; "" for any). The ranking runs in
    a thread, so the event loop goes on meanwhile; the index is rebuilt first (also in a
    thread) when the knowledge changed since this process's last question."""
    return await _process_cache.search(
        question=question, site_id=site_id, language=language, limit=limit
    )


async def covers(site_id: int | None) -> bool:
    """Whether the knowledge base has published passages a question of this site may get."""
    return (await _process_cache.current()).covers(site_id)


def term_weights(terms) -> dict[str, float]:
    """Each term's idf in this process's index as it stands (no rebuild: a question's passages
    came from it a moment ago)."""
    return _process_cache.index.weights(terms)


def process_index_sync() -> KnowledgeIndex:
    """This process's index, brought up to date (commands: to build it before timing)."""
    return _process_cache.current_sync()


def search_sync(*, question: str, site_id: int | None, language: str, limit: int = 3) -> list[Hit]:
    """`search` for synchronous code (management commands, the eval)."""
    return _process_cache.search_sync(
        question=question, site_id=site_id, language=language, limit=limit
    )
