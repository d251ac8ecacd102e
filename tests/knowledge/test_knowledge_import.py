"""import_knowledge from wherever the files are: folders below a hidden one, an import that
finds nothing, the same pages from another folder, articles stored under the old path keys,
and telling the running desk (or saying plainly that it was not told)."""

import importlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.apps import apps
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from chat.knowledge import importing, version
from chat.knowledge.models import Article
from devstack.localredis import start_redis
from runtime import stack_redis

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
PAGE = "---\nlanguage: en\n---\n# Zorblax care\n\n## Cleaning\n\nWipe the zorblax dry.\n"
FAQ = "question,answer\nDo zorblax wrenches rust?,Never.\nAre they heavy?,About 2 kg.\n"


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_knowledge", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- which files a folder gives ----------------------------------------------------------------


def test_a_folder_below_a_hidden_one_is_imported(tmp_path):
    # A checkout under ~/.local, a synced ~/.help-centre: the user chose that folder.
    kb = tmp_path / ".hidden" / "kb"
    write(kb / "care.md", PAGE)
    write(kb / ".drafts" / "draft.md", PAGE.replace("Zorblax care", "Draft"))
    write(kb / ".notes.md", PAGE.replace("Zorblax care", "Notes"))

    assert importing.collect([kb]) == [kb / "care.md"]
    out, _ = run(str(kb))
    assert "1 file(s): 1 created" in out
    assert list(Article.objects.values_list("title", flat=True)) == ["Zorblax care"]


def test_an_import_that_finds_no_file_fails_and_says_what_to_do(tmp_path):
    empty = tmp_path / "kb"
    write(empty / "notes.txt", "not a page")
    with pytest.raises(
        CommandError,
        match=r"No Markdown .* file found in .*kb: nothing "
        r"imported\. Give the folder that holds",
    ):
        run(str(empty))
    assert not Article.objects.exists()


def test_an_empty_folder_among_good_ones_is_named(tmp_path):
    write(tmp_path / "kb" / "care.md", PAGE)
    (tmp_path / "typo").mkdir()
    out, err = run(str(tmp_path / "kb"), str(tmp_path / "typo"))
    assert "1 created" in out
    assert f"No Markdown or CSV file in {tmp_path / 'typo'}" in err


def test_manage_py_exits_non_zero_when_nothing_was_found(tmp_path):
    (tmp_path / "kb").mkdir()
    done = subprocess.run(
        [sys.executable, "manage.py", "import_knowledge", str(tmp_path / "kb")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "REDIS_URL": settings.REDIS_URL, "VAR_DIR": str(tmp_path / "var")},
    )
    assert done.returncode != 0
    assert "No Markdown" in done.stderr and "Knowledge import from" not in done.stdout


# --- what an article is recognised by ------------------------------------------------------------


def test_the_same_pages_from_another_folder_update_their_articles(tmp_path):
    first = tmp_path / "export-1"
    write(first / "en" / "care.md", PAGE)
    write(first / "faq.csv", FAQ)
    out, _ = run(str(first))
    assert "3 created" in out

    moved = tmp_path / "elsewhere" / "export-2"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    out, _ = run(str(moved))
    assert "0 created, 0 updated, 3 skipped" in out

    write(moved / "en" / "care.md", PAGE.replace("Wipe", "Oil"))
    out, _ = run(str(moved))
    assert "0 created, 1 updated, 2 skipped" in out
    assert Article.objects.count() == 3
    assert "Oil the zorblax" in Article.objects.get(title="Zorblax care").body
    keys = set(Article.objects.values_list("source_key", flat=True))
    assert keys == {
        "title:en:zorblax care",
        "title:en:do zorblax wrenches rust?",
        "title:en:are they heavy?",
    }


def test_front_matter_id_then_url_then_title_and_language():
    assert importing.title_key("  Shipping   and Delivery ", "en-GB") == (
        "title:en:shipping and delivery"
    )
    assert importing.title_key("配送与运费", "zh-CN") == "title:zh:配送与运费"


def test_id_and_url_win_over_the_title(tmp_path):
    write(
        tmp_path / "a.md",
        "---\nid: care-1\nurl: https://help.example/care\n---\n# Zorblax care\n\nText.\n",
    )
    write(tmp_path / "b.md", "---\nurl: https://help.example/other\n---\n# Other\n\nText.\n")
    run(str(tmp_path))
    assert set(Article.objects.values_list("source_key", flat=True)) == {
        "id:care-1",
        "https://help.example/other",
    }


def test_two_sources_with_one_key_in_one_import_are_refused(tmp_path):
    write(tmp_path / "en" / "care.md", PAGE)
    write(tmp_path / "old" / "care.md", PAGE.replace("Wipe", "Dry"))
    out, err = run(str(tmp_path))
    assert "1 created" in out and "1 failed" in out
    assert "the same title and language as" in err and "Give each an id or url" in err
    assert Article.objects.count() == 1


def test_articles_stored_under_their_old_path_keys_are_re_keyed(tmp_path):
    """Migration 0009: rows an older import keyed by absolute path get the new key, so the next
    import of the same pages, from anywhere, updates them instead of adding them again."""
    page = write(tmp_path / "kb" / "care.md", PAGE)
    Article.objects.create(
        title="Zorblax care",
        body="## Cleaning\n\nWipe the zorblax dry.",
        language="en",
        slug="care",
        source_key=f"file:{page.resolve()}",
    )
    Article.objects.create(
        title="Do zorblax wrenches rust?",
        body="Never.",
        language="en",
        source_key=f"file:{(tmp_path / 'faq.csv').resolve()}#0123456789abcdef",
    )
    # The same page imported twice from two folders before: the second copy keeps its key.
    Article.objects.create(
        title="Zorblax care", body="Wipe.", language="en", source_key="file:/old/checkout/care.md"
    )
    migration = importlib.import_module("chat.migrations.0009_knowledge_keys_survive_moves")

    migration.rekey(apps, None)

    assert sorted(Article.objects.values_list("source_key", flat=True)) == [
        "file:/old/checkout/care.md",
        "title:en:do zorblax wrenches rust?",
        "title:en:zorblax care",
    ]
    shutil.move(tmp_path / "kb", tmp_path / "moved")
    write(tmp_path / "moved" / "faq.csv", FAQ)
    out, _ = run(str(tmp_path / "moved"))
    assert "1 created" in out  # "Are they heavy?" is new; the other two are the old rows
    assert Article.objects.count() == 4


def test_the_sample_imported_again_adds_nothing():
    run("--sample")
    keys = set(Article.objects.values_list("source_key", flat=True))
    out, _ = run("--sample")
    assert "0 created, 0 updated, 8 skipped" in out
    assert set(Article.objects.values_list("source_key", flat=True)) == keys


# --- telling the running desk ----------------------------------------------------------------------


def test_one_version_bump_for_a_whole_import(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.md", PAGE.replace("Zorblax care", f"Zorblax {name}"))
    told = []
    real = version.tell
    monkeypatch.setattr(version, "tell", lambda: told.append(1) or real())
    before = version.current_sync()

    out, err = run(str(tmp_path))

    assert "3 created" in out and err == ""
    assert told == [1]  # not one per article: every process rebuilds once
    assert version.current_sync() not in (before, None)
    version.bump()  # outside an import, an edit bumps at once as before
    assert told == [1, 1]


def test_an_import_again_tells_a_desk_that_missed_the_first(tmp_path):
    write(tmp_path / "care.md", PAGE)
    run(str(tmp_path))
    before = version.current_sync()
    out, _ = run(str(tmp_path))
    assert "1 skipped" in out and version.current_sync() != before


def test_an_import_the_desk_did_not_hear_of_says_so_and_how_to_fix_it(tmp_path, monkeypatch):
    write(tmp_path / "care.md", PAGE)
    monkeypatch.setattr(settings, "REDIS_URL", f"unix://{tmp_path}/nobody-listens.sock")

    out, err = run(str(tmp_path))

    assert "1 created" in out  # the import itself is done
    assert Article.objects.filter(title="Zorblax care").exists()
    assert "The running desk was not told of this change" in err
    assert f"unix://{tmp_path}/nobody-listens.sock" in err
    assert "within 600 s (KNOWLEDGE_INDEX_MAX_AGE_SECONDS) or when restarted" in err
    assert "set REDIS_URL to the desk's Redis" in err


def test_a_password_in_redis_url_is_not_printed(tmp_path, monkeypatch):
    write(tmp_path / "care.md", PAGE)
    monkeypatch.setattr(settings, "REDIS_URL", "redis://desk:s3cret@127.0.0.1:1/0")
    _, err = run(str(tmp_path))
    assert "redis://desk:***@127.0.0.1:1/0" in err and "s3cret" not in err


def test_a_command_from_another_shell_reaches_the_stack_s_redis(tmp_path):
    """`make run` in one terminal, `manage.py import_knowledge` in another, with nothing set:
    the import bumps the knowledge version in the Redis the stack started."""
    if connection.vendor != "sqlite":
        pytest.skip("the second shell shares the test database as a file")
    var = tmp_path / "var"
    with start_redis(var / "run") as server:
        stack_redis.record(var, server.url)  # what devstack.stack does once Redis answers
        write(tmp_path / "kb" / "care.md", PAGE)
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(VAR_DIR=str(var), DATABASE_URL=f"sqlite:///{connection.settings_dict['NAME']}")

        done = subprocess.run(
            [sys.executable, "manage.py", "import_knowledge", str(tmp_path / "kb")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert done.returncode == 0, done.stderr
        assert "1 created" in done.stdout and "not told" not in done.stderr
        assert redis.Redis.from_url(server.url).get(version.KEY)
