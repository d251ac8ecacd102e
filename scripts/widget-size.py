#!/usr/bin/env python3
"""Print the gzipped size (level 9) of the chat widget's files; exit 1 over the budget.

The loader (embed.js) is on every page of a customer's site; widget.js (and widget.css if
present) load only when a visitor opens the chat. Budget: all of them together <= 15 KB gzipped.
What is measured is what is served: the files scripts/build-static.sh builds (minified) from
static/widget/src/ and static/shared/src/; a build older than its sources is refused (exit 1).
"""

import gzip
import sys
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "static"
WIDGET = STATIC / "widget"
SOURCES = [WIDGET / "src", STATIC / "shared" / "src"]
BUILT = ["embed.js", "widget.js"]
LOADER = "embed.js"
FILES = [LOADER, "widget.js", "widget.css"]
BUDGET = 15_000  # "15 KB", read strictly


def gz(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def stale() -> list[str]:
    """Built files older than a source they are built from."""
    newest = max((p.stat().st_mtime for d in SOURCES for p in d.rglob("*.js")), default=0)
    return [
        name
        for name in BUILT
        if (WIDGET / name).exists() and (WIDGET / name).stat().st_mtime < newest
    ]


def main() -> int:
    if old := stale():
        print(
            f"{', '.join(old)} older than static/widget/src or static/shared/src: "
            "run `bash scripts/build-static.sh` (make install does)",
            file=sys.stderr,
        )
        return 1
    total = 0
    for name in FILES:
        path = WIDGET / name
        if not path.exists():
            if name == LOADER:
                print(f"missing {path}", file=sys.stderr)
                return 1
            continue
        size = gz(path)
        total += size
        print(f"{name:<12} {path.stat().st_size:>7,} B raw {size:>7,} B gzipped")
    print(f"{'total':<12} {'':>15} {total:>7,} B gzipped (budget {BUDGET:,} B)")
    if total > BUDGET:
        print(f"OVER BUDGET by {total - BUDGET:,} B", file=sys.stderr)
        return 1
    print(f"{BUDGET - total:,} B under budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
