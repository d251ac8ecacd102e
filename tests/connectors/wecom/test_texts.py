"""Cutting a long answer into the 2048-byte texts kf/send_msg takes."""

import pytest

from connectors.wecom.texts import TEXT_MAX_BYTES, split_text


def _check(pieces: list[str], text: str, limit: int = TEXT_MAX_BYTES) -> None:
    assert "".join(pieces) == text  # nothing lost, nothing added
    assert all(0 < len(piece.encode()) <= limit for piece in pieces)


def test_a_short_text_is_one_piece():
    assert split_text("您好") == ["您好"]
    assert split_text("") == [""]


def test_exactly_the_limit_is_one_piece_and_one_byte_more_is_two():
    assert split_text("a" * TEXT_MAX_BYTES) == ["a" * TEXT_MAX_BYTES]
    assert len(split_text("a" * (TEXT_MAX_BYTES + 1))) == 2


def test_chinese_is_counted_in_bytes_and_cut_after_a_sentence():
    sentence = "您的订单已经发货，预计三天内送达。"  # 17 characters, 51 bytes
    text = sentence * 60  # 3060 bytes
    pieces = split_text(text)
    _check(pieces, text)
    assert len(pieces) == 2 and pieces[0].endswith("。")


def test_a_paragraph_break_is_preferred_to_a_sentence():
    first = "First paragraph. " * 70  # 1190 bytes
    text = first + "\n\n" + "Second paragraph. " * 70
    pieces = split_text(text)
    _check(pieces, text)
    assert pieces[0] == first + "\n\n"


def test_text_without_any_break_is_cut_on_a_character_boundary():
    text = "字" * 1000  # 3000 bytes, 3 bytes a character: never cut inside one
    pieces = split_text(text)
    _check(pieces, text)
    assert [len(piece) for piece in pieces] == [682, 318]


def test_emoji_are_never_split():
    text = "🙂" * 1000  # 4 bytes each
    pieces = split_text(text, limit=10)
    _check(pieces, text, limit=10)
    assert set(pieces[:-1]) == {"🙂🙂"}


def test_a_limit_too_small_for_a_character_is_refused():
    with pytest.raises(ValueError):
        split_text("abc", limit=3)
