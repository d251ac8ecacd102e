"""The progress bar of a preparation, on stderr."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence


class _NoCounter:
    def update(self, n: int) -> None:
        pass


class Progress:
    """A tqdm bar over the named steps on stderr, with a byte bar below it for long copies;
    silent when disabled."""

    def __init__(self, steps: Sequence[str], *, enabled: bool):
        self.steps = tuple(steps)
        self.enabled = enabled
        self._bar = None
        self._started = False
        self._current = ""

    def __enter__(self) -> Progress:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=len(self.steps),
                desc="prepare model",
                unit="step",
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
            )
        return self

    def step(self, name: str) -> None:
        self._current = name
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(name)

    def note(self, text: str) -> None:
        """Detail on the current step (which download, cached or not)."""
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self._current}: {text}")

    @contextlib.contextmanager
    def bytes(self, total: int, desc: str) -> Iterator:
        if self._bar is None:
            yield _NoCounter()
            return
        from tqdm import tqdm

        with tqdm(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        ) as counter:
            yield counter

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bar is None:
            return
        if exc_type is None and self._started:
            self._bar.update(1)
            self._bar.set_postfix_str("done")
        self._bar.close()
