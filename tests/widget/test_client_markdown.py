"""The widget's incremental markdown renderer (static/widget/src/markdown.js), run by Node.js
on its ES module: streamed in pieces it must give exactly what the previous renderer gave for
the whole text, at every split point, while parsing only the open block per delta. The checks
are in tests/widget/test_client_markdown.mjs; the browser side (the same HTML streamed or at once,
and nothing injected) is tests/e2e/test_client_widget.py."""

import shutil
import subprocess
from pathlib import Path

TEST = Path(__file__).with_suffix(".mjs")


def test_incremental_markdown_renders_what_the_whole_text_renders():
    node = shutil.which("node")
    assert node, "Node.js is needed (make install builds with it): install Debian's nodejs"
    result = subprocess.run(
        [node, str(TEST)], capture_output=True, text=True, timeout=120, cwd=TEST.parents[2]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "match the old renderer at every split" in result.stdout
