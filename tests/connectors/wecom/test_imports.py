"""WeCom's API modules are a library: they import no app of the project and no Django, so the
callback view, the sync process and a test can each load them on their own. (The channel
built on them, kind.py, views.py, syncing.py, sending.py…, is the desk's and uses Django.)"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
PROJECT = ("django", "channels", "daphne", "cs_site", "webhooks", "agents", "chat")
PROJECT += ("inference_worker", "runtime")
LIBRARY = ("callback", "client", "crypto", "messages", "texts", "window")
MODULES = [f"connectors.wecom.{name}" for name in LIBRARY]


def test_the_wecom_modules_import_without_the_project_or_django():
    assert all((ROOT / "connectors" / "wecom" / f"{name}.py").exists() for name in LIBRARY)
    code = (
        "import sys\n"
        f"for name in {PROJECT!r}:\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        f"import {', '.join(MODULES)}\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
