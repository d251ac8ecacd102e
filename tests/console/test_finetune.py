"""The fine-tuning export: `manage.py export_finetune` and the admin action over a fixture of
rated conversations: exact lines, scrubbed personal data, preference pairs, what is skipped,
duplicates, filters and the deterministic train/validation split."""

import datetime as dt
import io
import json
import uuid
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from chat import finetune
from chat.models import Conversation, Feedback, Message, Site

pytestmark = pytest.mark.django_db

UP, DOWN = Feedback.Rating.UP, Feedback.Rating.DOWN
SHOP_PROMPT = "You are the assistant of Shop. The customer's name is Anna Smith."
ZH_PROMPT = "你是商店的客服。"
PLAIN_PROMPT = "You are the assistant of Shop."


def conversation(number: int, **fields) -> Conversation:
    # Fixed ids: the split is a hash of the id, so the test knows where each one lands.
    return Conversation.objects.create(id=uuid.UUID(int=number), token_hash="0" * 64, **fields)


def say(conv: Conversation, role: str, text: str, *, rating: str = "", **fields) -> Message:
    message = Message.objects.create(conversation=conv, role=role, text=text, **fields)
    if rating:
        Feedback.objects.create(message=message, rating=rating)
    return message


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


@pytest.fixture
def rated() -> dict[str, Message]:
    site = Site.objects.create(
        key="site_shop", name="Shop", allowed_origins="https://shop.example.com"
    )
    # 1: an English customer who gave a name and address; one answer up, one unrated.
    anna = conversation(
        1,
        site=site,
        language="en",
        customer_name="Anna Smith",
        customer_email="anna@shop.example",
        csat_score=5,
    )
    q1 = "Hi, I'm Anna Smith, where is order 12345678?"
    say(anna, "customer", q1)
    a1 = say(
        anna,
        "bot",
        "Hello Anna, order 12345678 ships today.",
        rating=UP,
        prompt=[turn("system", SHOP_PROMPT), turn("user", q1)],
    )
    q2 = "Call me at +1 415-555-0132 or anna@shop.example"
    say(anna, "customer", q2)
    a2 = say(
        anna,
        "bot",
        "We will call +1 415-555-0132 today.",
        prompt=[
            turn("system", SHOP_PROMPT),
            turn("user", q1),
            turn("assistant", a1.text),
            turn("user", q2),
        ],
    )
    # 2: a Chinese customer; the bot's thumbs-down answer is corrected by an agent.
    li = conversation(
        2, language="zh-CN", customer_name="李伟", customer_email="li.wei@example.cn", csat_score=2
    )
    zq1 = "我的手机号是13812345678，邮箱 li.wei@example.cn"
    say(li, "customer", zq1)
    b1 = say(
        li,
        "bot",
        "好的李伟，我们会联系您。",
        rating=DOWN,
        prompt=[turn("system", ZH_PROMPT), turn("user", zq1)],
    )
    say(li, "system", "Agent Zhang joined")
    agent = say(li, "agent", "李伟您好，我是客服小张，已为您登记。")
    say(li, "customer", "谢谢")
    b2 = say(
        li,
        "bot",
        "不客气。",
        rating=UP,
        is_fallback=True,
        prompt=[turn("system", ZH_PROMPT), turn("user", "谢谢")],
    )
    b3 = say(
        li,
        "bot",
        "不客气，李伟！",
        rating=UP,
        prompt=[
            turn("system", ZH_PROMPT),
            turn("user", zq1),
            turn("assistant", b1.text),
            turn("assistant", agent.text),
            turn("user", "谢谢"),
        ],
    )
    # 3: staff in the playground: never training data.
    play = conversation(3, channel=Conversation.Channel.PLAYGROUND, language="en")
    p1 = say(
        play,
        "bot",
        "Test answer.",
        rating=UP,
        prompt=[turn("system", PLAIN_PROMPT), turn("user", "test")],
    )
    # 4: a thumbs-up answer with no stored prompt, a partial one, and a thumbs-down answer
    # the customer (not an agent) followed: no pair.
    other = conversation(4, language="en")
    n1 = say(other, "bot", "Old answer.", rating=UP)
    n2 = say(
        other,
        "bot",
        "Cut off ans",
        rating=UP,
        is_partial=True,
        prompt=[turn("system", PLAIN_PROMPT), turn("user", "q")],
    )
    say(
        other,
        "bot",
        "Wrong.",
        rating=DOWN,
        prompt=[turn("system", PLAIN_PROMPT), turn("user", "q2")],
    )
    say(other, "customer", "That's wrong.")
    # 5 and 6: the same question and answer twice: one line.
    hours = [turn("system", PLAIN_PROMPT), turn("user", "What are your opening hours?")]
    c5 = say(
        conversation(5, language="en-GB"),
        "bot",
        "9 to 5, Monday to Friday.",
        rating=UP,
        prompt=hours,
    )
    c6 = say(
        conversation(6, language="en"), "bot", "9 to 5, Monday to Friday.", rating=UP, prompt=hours
    )
    return {
        "a1": a1,
        "a2": a2,
        "b1": b1,
        "b2": b2,
        "b3": b3,
        "p1": p1,
        "n1": n1,
        "n2": n2,
        "c5": c5,
        "c6": c6,
    }


# What the lines must be, in full: every text scrubbed, the system prompt included.
A1_LINE = {
    "messages": [
        {
            "role": "system",
            "content": "You are the assistant of Shop. The customer's name is [NAME].",
        },
        {"role": "user", "content": "Hi, I'm [NAME], where is order [NUMBER]?"},
        {"role": "assistant", "content": "Hello [NAME], order [NUMBER] ships today."},
    ]
}
A2_LINE = {
    "messages": [
        {
            "role": "system",
            "content": "You are the assistant of Shop. The customer's name is [NAME].",
        },
        {"role": "user", "content": "Hi, I'm [NAME], where is order [NUMBER]?"},
        {"role": "assistant", "content": "Hello [NAME], order [NUMBER] ships today."},
        {"role": "user", "content": "Call me at [PHONE] or [EMAIL]"},
        {"role": "assistant", "content": "We will call [PHONE] today."},
    ]
}
B3_LINE = {
    "messages": [
        {"role": "system", "content": "你是商店的客服。"},
        {"role": "user", "content": "我的手机号是[PHONE]，邮箱 [EMAIL]"},
        {"role": "assistant", "content": "好的[NAME]，我们会联系您。"},
        {"role": "assistant", "content": "[NAME]您好，我是客服小张，已为您登记。"},
        {"role": "user", "content": "谢谢"},
        {"role": "assistant", "content": "不客气，[NAME]！"},
    ]
}
HOURS_LINE = {
    "messages": [
        {"role": "system", "content": "You are the assistant of Shop."},
        {"role": "user", "content": "What are your opening hours?"},
        {"role": "assistant", "content": "9 to 5, Monday to Friday."},
    ]
}
PAIR = {
    "prompt": [
        {"role": "system", "content": "你是商店的客服。"},
        {"role": "user", "content": "我的手机号是[PHONE]，邮箱 [EMAIL]"},
    ],
    "chosen": "[NAME]您好，我是客服小张，已为您登记。",
    "rejected": "好的[NAME]，我们会联系您。",
}
PII = (
    "Anna",
    "Smith",
    "anna@shop.example",
    "12345678",
    "415",
    "0132",
    "13812345678",
    "li.wei",
    "李伟",
)


def export(tmp_path, *args: str) -> tuple[dict[str, list[dict]], str, dict[str, str]]:
    """Run the command; (lines per file, stdout, raw text per file)."""
    out = tmp_path / "out.jsonl"
    stdout = io.StringIO()
    call_command("export_finetune", "--out", str(out), *args, stdout=stdout, stderr=io.StringIO())
    files = {"train": out, "valid": tmp_path / "out.valid.jsonl", "pairs": tmp_path / "pairs.jsonl"}
    raw = {name: path.read_text(encoding="utf-8") for name, path in files.items() if path.exists()}
    lines = {name: [json.loads(line) for line in text.splitlines()] for name, text in raw.items()}
    return lines, stdout.getvalue(), raw


def test_default_export_is_thumbs_up_model_answers_scrubbed_and_once(tmp_path, rated):
    lines, stdout, raw = export(
        tmp_path, "--validation-fraction", "0", "--pairs", str(tmp_path / "pairs.jsonl")
    )
    assert lines["train"] == [A1_LINE, B3_LINE, HOURS_LINE]
    assert "valid" not in lines  # no validation file for a fraction of 0
    assert lines["pairs"] == [PAIR]
    for text in raw.values():
        for secret in PII:
            assert secret not in text
        # Chinese is written as such, not \u-escaped.
        assert "\\u" not in text
    assert "Selected 8 answers." in stdout
    assert "Exported 3 lines: 3 train" in stdout
    assert "Skipped 4 (fallback: 1, no prompt: 1, partial: 1, playground: 1)" in stdout
    assert "Duplicates dropped: 1" in stdout
    assert "Preference pairs: 1" in stdout
    # a1: name ×3 (system, user, answer) + number ×2; b3: phone, email, name ×3; the pair:
    # phone, email, name ×2.
    assert "PII replaced: 14 (email: 2, name: 8, number: 2, phone: 2)" in stdout


def test_the_split_is_by_conversation_and_the_same_every_time(tmp_path, rated):
    first, _, raw = export(tmp_path, "--validation-fraction", "0.5")
    again, _, raw_again = export(tmp_path, "--validation-fraction", "0.5")
    assert raw == raw_again
    # Conversation 1 hashes below 0.5, 2 and 5 above: see finetune.split_of.
    assert first["valid"] == [A1_LINE]
    assert first["train"] == [B3_LINE, HOURS_LINE]
    for number, line in ((1, A1_LINE), (2, B3_LINE), (5, HOURS_LINE)):
        split = finetune.split_of(uuid.UUID(int=number), 0.5)
        assert line in first["valid" if split == "validation" else "train"]
    # The default 0.1 puts conversation 1 in training: a smaller share, the same hash.
    default, stdout, _ = export(tmp_path)
    assert default["train"] == [A1_LINE, B3_LINE, HOURS_LINE] and default["valid"] == []
    assert "out.valid.jsonl" in stdout


def test_split_of_is_stable_and_near_the_fraction():
    ids = [uuid.UUID(int=n) for n in range(2000)]
    share = sum(finetune.split_of(i, 0.1) == "validation" for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [finetune.split_of(i, 0.1) for i in ids[:50]] == [
        finetune.split_of(str(i), 0.1) for i in ids[:50]
    ]
    assert all(finetune.split_of(i, 0) == "train" for i in ids)


def test_validation_path():
    from pathlib import Path

    assert finetune.validation_path(Path("/x/out.jsonl")) == Path("/x/out.valid.jsonl")
    assert finetune.validation_path(Path("data")) == Path("data.valid")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--thumbs", "any"], [A1_LINE, A2_LINE, B3_LINE, HOURS_LINE]),
        (["--min-csat", "4"], [A1_LINE]),
        (["--thumbs", "any", "--min-csat", "5"], [A1_LINE, A2_LINE]),
        (["--site", "site_shop"], [A1_LINE]),
        (["--language", "zh"], [B3_LINE]),
        (["--language", "en"], [A1_LINE, HOURS_LINE]),
    ],
)
def test_filters(tmp_path, rated, args, expected):
    lines, _, _ = export(tmp_path, "--validation-fraction", "0", *args)
    assert lines["train"] == expected


def test_date_filters_use_the_answers_day(tmp_path, rated):
    old = timezone.now() - dt.timedelta(days=10)
    Message.objects.filter(pk=rated["a1"].pk).update(created_at=old)
    today = timezone.localdate().isoformat()
    recent, _, _ = export(tmp_path, "--validation-fraction", "0", "--since", today)
    assert recent["train"] == [B3_LINE, HOURS_LINE]
    older, _, _ = export(
        tmp_path,
        "--validation-fraction",
        "0",
        "--until",
        (timezone.localdate() - dt.timedelta(days=5)).isoformat(),
    )
    assert older["train"] == [A1_LINE]


def test_bad_arguments_are_refused(tmp_path, rated):
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(CommandError, match="No site with key"):
        call_command("export_finetune", "--out", out, "--site", "nope", stdout=io.StringIO())
    with pytest.raises(CommandError, match="after --until"):
        call_command(
            "export_finetune",
            "--out",
            out,
            "--since",
            "2025-02-01",
            "--until",
            "2025-01-01",
            stdout=io.StringIO(),
        )
    with pytest.raises(CommandError, match="below 1"):
        call_command(
            "export_finetune", "--out", out, "--validation-fraction", "1", stdout=io.StringIO()
        )


def test_malformed_prompt_is_skipped(tmp_path):
    conv = conversation(7, language="en")
    say(conv, "bot", "Answer.", rating=UP, prompt=[turn("system", "s"), turn("assistant", "x")])
    say(conv, "bot", "Answer 2.", rating=UP, prompt={"not": "a list"})
    lines, stdout, _ = export(tmp_path, "--validation-fraction", "0")
    assert lines["train"] == []
    assert "Skipped 2 (malformed prompt: 2)" in stdout


# The admin is served by Daphne (ASGI), so the download is an async iterator; Django's test
# client reads it synchronously and says so.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_admin_action_downloads_the_commands_files_for_the_selection(admin_client, rated):
    response = admin_client.post(
        "/admin/chat/conversation/",
        {
            "action": "export_finetune",
            "_selected_action": [str(uuid.UUID(int=n)) for n in (1, 2, 3)],
        },
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="finetune-')
    assert response["Content-Disposition"].endswith('.zip"')
    with zipfile.ZipFile(io.BytesIO(b"".join(response))) as archive:
        assert archive.testzip() is None
        raw = {name: archive.read(name).decode() for name in archive.namelist()}
    assert sorted(raw) == ["pairs.jsonl", "summary.txt", "train.jsonl", "valid.jsonl"]
    lines = {
        name: [json.loads(line) for line in text.splitlines()]
        for name, text in raw.items()
        if name.endswith(".jsonl")
    }
    # The command's rules for these three conversations: conversation 1 and 2's thumbs-up
    # model answers (the default split puts both in training), 2's corrected answer as a pair,
    # and nothing of the playground's 3.
    assert lines == {"train.jsonl": [A1_LINE, B3_LINE], "valid.jsonl": [], "pairs.jsonl": [PAIR]}
    summary = raw["summary.txt"]
    assert "Exported 2 lines: 2 train -> train.jsonl, 0 validation -> valid.jsonl" in summary
    assert "Skipped 2 (fallback: 1, playground: 1)" in summary
    assert "Preference pairs: 1 -> pairs.jsonl" in summary
    for text in raw.values():
        for secret in PII:
            assert secret not in text


def test_the_archive_splits_like_the_command(tmp_path, rated):
    """Validation lines wait while training lines are written: both entries are whole."""
    command, _, _ = export(tmp_path, "--validation-fraction", "0.5")
    parts = finetune.archive(finetune.Selection(), batch=2, validation_fraction=0.5)
    with zipfile.ZipFile(io.BytesIO(b"".join(parts))) as archive:
        assert (
            [json.loads(line) for line in archive.read("train.jsonl").splitlines()]
            == command["train"]
            == [B3_LINE, HOURS_LINE]
        )
        assert (
            [json.loads(line) for line in archive.read("valid.jsonl").splitlines()]
            == command["valid"]
            == [A1_LINE]
        )
