#!/usr/bin/env python3
"""Print the gzipped size (level 9) of the chat widget's files; exit 1 over the budget.

The loader (embed.js) is on every page of a customer's site; widget.js (and widget.css if
present) load only when a visitor opens the chat. Budget: all of them together <= 15 KB gzipped.
"""

import gzip
import sys
from pathlib import Path

WIDGET = Path(__file__).resolve().parent.parent / "static" / "widget"
LOADER = "embed.js"
FILES = [LOADER, "widget.js", "widget.css"]
BUDGET = 15_000  # "15 KB", read strictly


def gz(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def main() -> int:
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
