"""Imports run one way, down six layers: connectors → webhooks → agents → chat →
inference_worker → runtime.

The channels (connectors: e-mail, WeCom) and outbound webhooks (webhooks) listen to the desk's
events (chat.hooks) and read both sides; the staff side (agents) builds on the customer side
(chat), which builds on the worker, which builds on runtime (Redis clients, the channel layer,
broadcasting, presence, async helpers); never the other way, so each layer can be read, tested
and deployed without the ones above it (a worker host needs neither chat nor agents). cs_site
(settings, ASGI, URLs) sits alone on top of them all: it wires the apps together, and none of
them, nor runtime, imports it. Settings are read through django.conf.settings, which is no
import of cs_site. The worker's wire protocol and the presence kept in Redis also import without
Django at all: the worker speaks the protocol, and anything may read presence, with no
configured web project.
"""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PROJECT = "cs_site"
LAYERS = ("connectors", "webhooks", "agents", "chat", "inference_worker", "runtime")  # top down
# Each layer, and the packages it must never import (function-level imports included): the
# project, and every layer above it.
FORBIDDEN = {layer: {PROJECT, *LAYERS[:index]} for index, layer in enumerate(LAYERS)}
# A string that is a whole dotted path into the project (import_module("cs_site.asgi"), a mock
# target, a settings entry) ties a layer to it as an import does.
PROJECT_PATH = re.compile(rf"{PROJECT}(\.\w+)+(:\w+)?")


def _source_files(app: str) -> list[Path]:
    return [
        path
        for path in sorted((ROOT / app).rglob("*.py"))
        if "tests" not in path.relative_to(ROOT).parts and not path.name.startswith("test_")
    ]


def _imported_packages(path: Path, app: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file, and of every string that names a
    project module; relative imports stay in `app`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, app if node.level else node.module.split(".")[0]))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and PROJECT_PATH.fullmatch(node.value)
        ):
            found.append((node.lineno, PROJECT))
    return sorted(found)


def test_the_walk_sees_every_kind_of_import(tmp_path):
    module = tmp_path / "sample.py"
    module.write_text(
        "import agents.models\nfrom chat import frames\nfrom . import sibling\n"
        "def later():\n    from agents.services import takeover\n"
        "    import_module('cs_site.asgi')\n"
        "    return 'cs_site.asgi, named in a sentence'\n"
    )
    assert _imported_packages(module, "inference_worker") == [
        (1, "agents"),
        (2, "chat"),
        (3, "inference_worker"),
        (5, "agents"),
        (6, "cs_site"),
    ]


def test_each_layer_may_import_only_the_layers_below_it():
    assert FORBIDDEN == {
        "connectors": {"cs_site"},
        "webhooks": {"cs_site", "connectors"},
        "agents": {"cs_site", "connectors", "webhooks"},
        "chat": {"cs_site", "connectors", "webhooks", "agents"},
        "inference_worker": {"cs_site", "connectors", "webhooks", "agents", "chat"},
        "runtime": {"cs_site", "connectors", "webhooks", "agents", "chat", "inference_worker"},
    }


@pytest.mark.parametrize("app", LAYERS)
def test_imports_run_one_way(app):
    files = _source_files(app)
    assert len(files) > 5, app  # the walk found the layer's modules
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {package}"
        for path in files
        for line, package in _imported_packages(path, app)
        if package in FORBIDDEN[app]
    ]
    assert wrong == []


def _import_in_isolation(*modules: str, blocked: tuple[str, ...]) -> set[str]:
    """Import `modules` in a fresh interpreter in which importing any of `blocked` fails (as if
    not installed); the top-level packages they loaded that are not in the standard library."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        "before = set(sys.modules)\n"
        f"import {', '.join(modules)}\n"
        "loaded = {name.split('.')[0] for name in set(sys.modules) - before}\n"
        "print(' '.join(sorted(loaded - set(sys.stdlib_module_names))))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


ABOVE_RUNTIME = (PROJECT, *LAYERS[:-1])
WEB = ("django", "channels", "daphne", PROJECT, "chat", "agents", "webhooks", "connectors")


def test_the_worker_protocol_needs_only_the_standard_library_and_typing_extensions():
    loaded = _import_in_isolation("inference_worker.protocol", blocked=(*WEB, "pydantic", "redis"))
    assert loaded <= {"inference_worker", "typing_extensions"}


def test_the_heartbeats_helper_needs_only_the_standard_library():
    loaded = _import_in_isolation("runtime.heartbeats", blocked=(*WEB, *ABOVE_RUNTIME, "redis"))
    assert loaded == {"runtime"}


def test_worker_presence_imports_without_django():
    loaded = _import_in_isolation("inference_worker.presence", blocked=WEB)
    assert "inference_worker" in loaded and not loaded & set(WEB)


def test_the_deathwatch_imports_without_django():
    # A process of its own beside each worker: it starts in a moment without a project.
    loaded = _import_in_isolation("inference_worker.deathwatch", blocked=WEB)
    assert "inference_worker" in loaded and not loaded & set(WEB)


def test_runtime_imports_without_the_apps_or_a_configured_project():
    modules = [
        f"runtime.{path.stem}" for path in _source_files("runtime") if path.stem != "__init__"
    ]
    assert len(modules) > 5  # the walk found runtime's modules
    loaded = _import_in_isolation(*modules, blocked=ABOVE_RUNTIME)
    assert "runtime" in loaded and not loaded & set(ABOVE_RUNTIME)
