"""Imports run one way: agents → chat → inference_worker.

The staff side (agents) builds on the customer side (chat), which builds on the worker; never
the other way, so each layer can be read, tested and deployed without the ones above it (a
worker host needs neither chat nor agents). The worker's wire protocol and the presence kept
in Redis also import without Django at all: the worker speaks the protocol, and anything may
read presence, with no configured web project.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# Each app, and the apps it must never import (function-level imports included).
FORBIDDEN = {
    "inference_worker": {"chat", "agents"},
    "chat": {"agents"},
    "agents": set(),
}


def _source_files(app: str) -> list[Path]:
    return [path for path in sorted((ROOT / app).rglob("*.py"))
            if "tests" not in path.relative_to(ROOT).parts and not path.name.startswith("test_")]


def _imported_packages(path: Path, app: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file; relative imports stay in `app`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, app if node.level else node.module.split(".")[0]))
    return found


def test_the_walk_sees_every_kind_of_import(tmp_path):
    module = tmp_path / "sample.py"
    module.write_text("import agents.models\nfrom chat import frames\nfrom . import sibling\n"
                      "def later():\n    from agents.services import takeover\n")
    assert _imported_packages(module, "inference_worker") == [
        (1, "agents"), (2, "chat"), (3, "inference_worker"), (5, "agents")]


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_imports_run_one_way(app):
    files = _source_files(app)
    assert len(files) > 5, app  # the walk found the app's modules
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {package}"
             for path in files for line, package in _imported_packages(path, app)
             if package in FORBIDDEN[app]]
    assert wrong == []


def _import_in_isolation(module: str, *, blocked: tuple[str, ...]) -> set[str]:
    """Import `module` in a fresh interpreter in which importing any of `blocked` fails (as if
    not installed); the top-level packages it loaded that are not in the standard library."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "loaded = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "print(' '.join(sorted(loaded - set(sys.stdlib_module_names))))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


WEB = ("django", "channels", "daphne", "cs_site", "chat", "agents")


def test_the_worker_protocol_needs_only_the_standard_library_and_typing_extensions():
    loaded = _import_in_isolation("inference_worker.protocol",
                                  blocked=(*WEB, "pydantic", "redis"))
    assert loaded <= {"inference_worker", "typing_extensions"}


def test_the_heartbeats_helper_needs_only_the_standard_library():
    loaded = _import_in_isolation("inference_worker.heartbeats", blocked=(*WEB, "redis"))
    assert loaded == {"inference_worker"}


def test_worker_presence_imports_without_django():
    loaded = _import_in_isolation("inference_worker.presence", blocked=WEB)
    assert "inference_worker" in loaded and not loaded & set(WEB)
