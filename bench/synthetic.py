"""The benchmark's synthetic answer: known words on a known schedule.

Both sides of the pipeline benchmark share this module: the worker (bench/synthetic_worker.py)
streams the words on the schedule, and the load generator checks every streamed answer against
the same text and measures each delta's arrival against the same schedule.

The rate law is the product's synthetic engine's (inference_worker/synthetic.py): the answer
streams word by word, each word due `len(word) / chars_per_second` after the one before it.
"""

import re

# The customer message carries a tag; the worker finds it in the prompt and records when it
# started streaming that answer (wall clock, the same clock the load generator reads).
TAG_PATTERN = re.compile(r"bench-([0-9a-f]{16})")
STARTS_KEY = "bench:stream-starts"  # Redis hash: tag → Unix time of the answer's first word


def answer_text(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


def pieces(text: str) -> list[str]:
    """The words as the engine yields them, each with the space before it."""
    return re.findall(r"\s*\S+", text)


def schedule(text: str, chars_per_second: float) -> list[float]:
    """Seconds after the first word at which each word is due."""
    due, offsets = 0.0, []
    for index, piece in enumerate(pieces(text)):
        if index:
            due += len(piece) / chars_per_second
        offsets.append(due)
    return offsets


def piece_ends(text: str) -> list[int]:
    """Character offset just after each word: a delta whose text so far ends at offset e holds
    every word up to the one ending at e."""
    ends, position = [], 0
    for piece in pieces(text):
        position += len(piece)
        ends.append(position)
    return ends


def message_for(tag: str) -> str:
    # A question no guard of the product answers or adds to ("Where is my order?" gets the
    # question for the order number appended): the answer streamed is the synthetic one.
    return f"Hello, this is benchmark customer bench-{tag}. What do you sell?"
