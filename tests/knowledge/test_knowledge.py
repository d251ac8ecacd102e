"""The knowledge base: segmentation, splitting, ranking, site isolation, edits reaching every
process, and the import and eval commands. Real Redis (conftest), real database."""

import io
import json
import threading
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from chat.knowledge import retrieval, services, version
from chat.knowledge.models import Article, Passage
from chat.knowledge.retrieval import IndexCache
from chat.knowledge.segment import guess_language, primary_language, terms
from chat.knowledge.splitting import split_sections, split_title
from chat.models import Site

# on_commit (the version bump) and the async ORM's own thread need real commits.
pytestmark = pytest.mark.django_db(transaction=True)

SAMPLE_EVAL = Path(__file__).resolve().parents[2] / "chat/knowledge/sample/eval.jsonl"


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def sample():
    run("import_knowledge", "--sample")


@pytest.fixture
def process():
    """A fresh process-wide cache: what another Daphne process would hold."""
    return IndexCache()


def make_site(name: str) -> Site:
    return Site.objects.create(name=name, allowed_origins=f"https://{name}.example")


def article(
    title="Zorblax wrench care", body="## Cleaning\n\nWipe the zorblax wrench dry.", **fields
) -> Article:
    return services.article_create(title=title, body=body, **fields)


# --- segmentation ----------------------------------------------------------------------------


def test_english_terms_are_stemmed_lowercased_and_free_of_stop_words():
    assert terms("Hi! SHIPPING, shipped and ships to the UK?") == ["ship", "ship", "ship", "uk"]
    # Full-width letters and digits (typed with a Chinese keyboard) are the ASCII ones.
    assert terms("ＩＰＨＯＮＥ １５ refunds") == ["iphon", "15", "refund"]


def test_chinese_terms_are_words_and_their_characters_without_function_words():
    got = terms("我想退货，运费谁承担？")
    assert {"退货", "运费", "承担", "退", "货"} <= set(got)
    assert not {"我", "想", "谁", "，"} & set(got)
    # Search mode also gives the shorter words inside a long one.
    assert {"保修", "保修期"} <= set(terms("保修期多长"))


def test_mixed_language_text_gives_both_kinds_of_terms():
    got = terms("AirPods 保修多久? warranty")
    assert {"airpod", "保修", "warranti"} <= set(got)


def test_language_helpers():
    assert guess_language("我的订单 order 在哪里") == "zh"
    assert guess_language("where is my 订单 please") == "en"
    assert primary_language("zh-CN") == "zh" and primary_language("EN_us") == "en"


# --- splitting -------------------------------------------------------------------------------


def test_markdown_is_split_by_headings_with_their_path():
    title, body = split_title(
        "\n# Returns\n\nIntro text.\n\n## Window\n\n30 days.\n\n"
        "## Refunds\n\n### Timing\n\n5 days.\n\n```\n# not a heading\n```\n"
        "## Exchanges ##\nNone.\n"
    )
    assert title == "Returns"
    sections = split_sections(body, max_chars=1000)
    assert [(s.heading, s.text.splitlines()[0]) for s in sections] == [
        ("", "Intro text."),
        ("Window", "30 days."),
        # "## Refunds" has no text of its own: no passage; its sub-section carries the path.
        ("Refunds > Timing", "5 days."),
        ("Exchanges", "None."),
    ]
    assert "# not a heading" in sections[2].text


def test_long_sections_are_cut_between_paragraphs_then_sentences():
    paragraphs = [f"Paragraph {i} " + "word " * 25 for i in range(4)]
    sections = split_sections("## Long\n\n" + "\n\n".join(paragraphs), max_chars=300)
    assert len(sections) == 2 and all(len(s.text) <= 300 for s in sections)
    assert all(s.heading == "Long" for s in sections)
    assert " ".join(s.text for s in sections).split() == " ".join(paragraphs).split()
    chinese = "退货需要保留原包装。" * 40  # one paragraph, 400 characters
    pieces = split_sections(chinese, max_chars=100)
    assert len(pieces) == 4 and "".join(p.text.replace(" ", "") for p in pieces) == chinese


def test_saving_an_article_splits_it_again():
    a = article(body="## One\n\nFirst.\n\n## Two\n\nSecond.")
    assert list(a.passages.values_list("position", "heading")) == [(0, "One"), (1, "Two")]
    services.article_update(article=a, body="Only an intro now.")
    assert list(Passage.objects.filter(article=a).values_list("heading", "text")) == [
        ("", "Only an intro now.")
    ]


# --- ranking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "question, language, slug",
    [
        ("How long does delivery to Germany take?", "en", "shipping"),
        ("Who pays for the return label?", "en", "returns"),
        ("My lamp stopped working after a year, is that covered?", "en", "warranty"),
        ("Can I pay later with Klarna?", "en", "payment"),
        ("包裹一直没收到怎么办？", "zh", "shipping"),
        ("退款多久能到账？", "zh", "returns"),
        ("音箱保修几年？", "zh", "warranty"),
        ("可以用支付宝付款吗？", "zh", "payment"),
    ],
)
def test_the_right_article_comes_first(sample, process, question, language, slug):
    hits = process.search_sync(question=question, site_id=None, language=language)
    assert hits and (hits[0].slug, hits[0].language) == (slug, language)
    assert hits[0].source_url.endswith(f"/{language}/{slug}")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize(
    "question, language",
    [
        ("What's the weather like in Paris tomorrow?", "en"),
        ("Can you recommend a good pasta recipe?", "en"),
        ("红烧肉怎么做？", "zh"),
        ("给我推荐一部好看的电影", "zh"),
        ("", "en"),
        ("?!", "en"),
    ],
)
def test_an_unrelated_question_gets_no_hit(sample, process, question, language):
    assert process.search_sync(question=question, site_id=None, language=language) == []


def test_other_languages_answer_only_when_the_question_s_own_has_nothing(sample, process):
    hits = process.search_sync(question="Klarna 30 days", site_id=None, language="zh-CN")
    assert hits[0].language == "zh"  # the Chinese page mentions Klarna too
    article(title="Zorblax wrench care", language="en")
    hits = process.search_sync(question="zorblax wrench", site_id=None, language="zh")
    assert hits and hits[0].title == "Zorblax wrench care"


def test_hits_carry_what_a_prompt_and_a_citation_need(process):
    a = article(source_url="https://help.example/zorblax")
    [hit] = process.search_sync(question="How do I clean the zorblax?", site_id=None, language="en")
    passage = a.passages.get()
    assert (hit.passage_id, hit.article_id, hit.title, hit.heading, hit.text, hit.source_url) == (
        passage.pk,
        a.pk,
        "Zorblax wrench care",
        "Cleaning",
        "Wipe the zorblax wrench dry.",
        "https://help.example/zorblax",
    )
    assert hit.score > 0


# --- what a question may see -----------------------------------------------------------------


def test_never_another_site_s_articles(process):
    shop, other = make_site("shop"), make_site("other")
    article(title="Shop zorblax", body="Zorblax wrenches ship in blue boxes.", site_id=shop.pk)
    article(title="Shared zorblax", body="Zorblax wrenches have a warranty.")
    seen = {
        site: {
            h.title
            for h in process.search_sync(
                question="zorblax wrenches", site_id=site, language="en", limit=5
            )
        }
        for site in (shop.pk, other.pk, None)
    }
    assert seen[shop.pk] == {"Shop zorblax", "Shared zorblax"}
    assert seen[other.pk] == {"Shared zorblax"}
    assert seen[None] == {"Shared zorblax"}


def test_unpublished_articles_are_not_searched_until_published(process):
    a = article(published=False)
    assert process.search_sync(question="zorblax wrench", site_id=None, language="en") == []
    services.articles_set_published(queryset=Article.objects.filter(pk=a.pk), published=True)
    assert process.search_sync(question="zorblax wrench", site_id=None, language="en")


# --- edits reach every process ---------------------------------------------------------------


async def test_an_edit_reaches_another_process_s_next_question(process):
    other = IndexCache()
    a = await sync_to_async(article)()
    for cache in (process, other):
        [hit] = await cache.search(question="zorblax", site_id=None, language="en")
        assert "dry" in hit.text
    builds = other.builds
    await other.search(question="zorblax", site_id=None, language="en")
    assert other.builds == builds  # nothing changed: the index is kept

    # The edit through the service, as admin makes it in yet another process.
    await sync_to_async(services.article_update)(
        article=a, body="## Cleaning\n\nOil the zorblax wrench weekly."
    )
    [hit] = await other.search(question="zorblax", site_id=None, language="en")
    assert "weekly" in hit.text and other.builds == builds + 1


async def test_a_deletion_reaches_another_process_s_next_question(process):
    a = await sync_to_async(article)()
    assert await process.search(question="zorblax wrench", site_id=None, language="en")
    await sync_to_async(services.article_delete)(article=a)
    assert await process.search(question="zorblax wrench", site_id=None, language="en") == []


def test_a_process_rebuilds_when_redis_lost_the_version(process, redis_server):
    article()
    process.search_sync(question="zorblax", site_id=None, language="en")
    assert version.current_sync() not in ("", None)
    builds = process.builds
    import redis

    redis.Redis.from_url(redis_server.url).flushall()  # a Redis restart without its data
    process.search_sync(question="zorblax", site_id=None, language="en")
    assert process.builds == builds + 1


async def test_searching_runs_off_the_event_loop(process, monkeypatch):
    await sync_to_async(article)()
    threads = []
    real = retrieval.KnowledgeIndex.search

    def spy(self, **kwargs):
        threads.append(threading.get_ident())
        return real(self, **kwargs)

    monkeypatch.setattr(retrieval.KnowledgeIndex, "search", spy)
    assert await process.search(question="zorblax", site_id=None, language="en")
    assert threads and threads[0] != threading.get_ident()


def test_admin_saves_through_the_service(admin_client, process):
    response = admin_client.post(
        "/admin/chat/article/add/",
        {
            "title": "Zorblax wrench care",
            "slug": "",
            "language": "en-GB",
            "site": "",
            "body": "## Storage\n\nKeep the zorblax wrench in its case.",
            "tags": "[]",
            "source_url": "",
            "published": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    a = Article.objects.get()
    assert (a.language, a.slug, a.passages.get().heading) == (
        "en",
        "zorblax-wrench-care",
        "Storage",
    )
    [hit] = process.search_sync(question="zorblax case", site_id=None, language="en")
    assert hit.article_id == a.pk
    response = admin_client.post(
        "/admin/chat/article/", {"action": "unpublish", "_selected_action": [a.pk]}
    )
    assert response.status_code == 302
    assert process.search_sync(question="zorblax case", site_id=None, language="en") == []


# --- import_knowledge ------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_import_markdown_csv_and_folders_and_again_without_duplicates(tmp_path, process):
    write(
        tmp_path / "kb/shipping.md",
        "---\nurl: https://help.example/ship\ntags: a, b\n---\n"
        "# Zorblax shipping\n\nWe ship zorblax wrenches by boat.\n",
    )
    write(tmp_path / "kb/deep/returns.zh.md", "# 佐布拉克斯退货\n\n扳手可以在三十天内退货。\n")
    write(
        tmp_path / "faq.csv",
        "question,answer\nDo zorblax wrenches rust?,Never.\n"
        "Are they heavy?,About 2 kg.\n,no question\n",
    )
    out = run("import_knowledge", str(tmp_path / "kb"), str(tmp_path / "faq.csv"))
    assert "3 file(s): 4 created, 0 updated, 0 skipped (unchanged), 1 failed" in out
    md = Article.objects.get(source_url="https://help.example/ship")
    assert (md.title, md.language, md.tags, md.body) == (
        "Zorblax shipping",
        "en",
        ["a", "b"],
        "We ship zorblax wrenches by boat.",
    )
    assert Article.objects.get(slug="returns").language == "zh"  # from the file name
    assert Article.objects.get(title="Are they heavy?").body == "About 2 kg."

    out = run("import_knowledge", str(tmp_path / "kb"), str(tmp_path / "faq.csv"))
    assert "0 created, 0 updated, 4 skipped" in out

    write(
        tmp_path / "kb/shipping.md",
        "---\nurl: https://help.example/ship\n---\n"
        "# Zorblax shipping\n\nWe ship zorblax wrenches by air now.\n",
    )
    out = run("import_knowledge", str(tmp_path / "kb/shipping.md"))
    assert "0 created, 1 updated, 0 skipped" in out
    assert Article.objects.count() == 4
    [hit] = process.search_sync(question="zorblax shipping", site_id=None, language="en")
    assert "by air now" in hit.text


def test_import_for_one_site_and_options(tmp_path):
    site = make_site("shop")
    path = write(tmp_path / "notes.md", "Plain text, no title.\n")
    run("import_knowledge", str(path), "--site", site.key, "--language", "de")
    a = Article.objects.get()
    assert (a.site_id, a.language, a.title) == (site.pk, "de", "notes")
    with pytest.raises(CommandError, match="No site"):
        run("import_knowledge", str(path), "--site", "nope")
    with pytest.raises(CommandError, match="no such file"):
        run("import_knowledge", str(tmp_path / "missing.md"))
    with pytest.raises(CommandError, match="PATH"):
        run("import_knowledge")


def test_sample_loads_once_marked_as_sample_and_is_removed_again():
    assert "8 created" in run("import_knowledge", "--sample")
    assert "8 skipped" in run("import_knowledge", "--sample")
    assert Article.objects.filter(is_sample=True).count() == 8
    assert set(Article.objects.values_list("language", flat=True)) == {"en", "zh"}
    assert "Removed 8" in run("import_knowledge", "--remove-sample")
    assert not Article.objects.exists()


# --- eval_knowledge --------------------------------------------------------------------------


def test_eval_reports_recall_and_timing(sample, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieval, "_process_cache", IndexCache())
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"question": "Which payment methods do you accept?", "expected": "payment"},
                {"question": "Who pays for the return label?", "expected": "Returns and refunds"},
                {"question": "How long does delivery to Germany take?", "expected": "warranty"},
                {"question": "红烧肉怎么做？", "expected": ""},
            ]
        )
    )
    out = run("eval_knowledge", str(questions))
    assert "recall@1: 0.667 (2/3)" in out and "recall@3: 0.667 (2/3)" in out
    assert "out of scope, no hit: 1.000 (1/1)" in out
    assert "retrieval time: mean" in out and "p99" in out


def test_the_shipped_question_set_keeps_its_recall(sample, monkeypatch):
    monkeypatch.setattr(retrieval, "_process_cache", IndexCache())
    out = run("eval_knowledge", str(SAMPLE_EVAL))
    share = {
        line.split(":")[0]: float(line.split(":")[1].split()[0])
        for line in out.splitlines()
        if line.startswith(("recall@", "out of scope"))
    }
    assert share["recall@1"] >= 0.95 and share["recall@3"] >= 0.95, out
    # Measured 0.794 (27/34) when the cut was calibrated: see docs/operations.md.
    assert share["out of scope, no hit"] >= 0.79, out


def test_eval_reads_csv_too(sample, tmp_path, monkeypatch):
    monkeypatch.setattr(retrieval, "_process_cache", IndexCache())
    path = tmp_path / "q.csv"
    path.write_text("question,expected,language\n音箱保修几年？,warranty,zh\n", encoding="utf-8")
    assert "recall@1: 1.000 (1/1)" in run("eval_knowledge", str(path))
