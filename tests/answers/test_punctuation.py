import pytest

from chat.punctuation import FullwidthPunctuation, is_cjk, to_fullwidth


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("你好,请稍等.", "你好，请稍等。"),
        ("真的吗?太好了!", "真的吗？太好了！"),
        ("注意:明天;后天", "注意：明天；后天"),
        ("请提供订单号(例如12345)谢谢", "请提供订单号（例如12345）谢谢"),
        ("等一下...好的", "等一下……好的"),
        ("价格是3.5元,共1,000件.", "价格是3.5元，共1,000件。"),
        ("版本2.0已发布.", "版本2.0已发布。"),
        ("请访问https://shop.example.com/a?b=1,c=2.", "请访问https://shop.example.com/a?b=1,c=2."),
        ("请访问 www.example.com 查看.", "请访问 www.example.com 查看。"),
        ("发邮件到support@example.com.", "发邮件到support@example.com."),
        ("运行`pip install x,y.z`即可.", "运行`pip install x,y.z`即可。"),
        ("代码:\n```\nprint(1, 2).\n```\n完成.", "代码：\n```\nprint(1, 2).\n```\n完成。"),
        ("Hello, world. OK?", "Hello, world. OK?"),
        ("我们支持Python,Java.", "我们支持Python,Java."),
        ("中文.com不是句号", "中文.com不是句号"),
        ("好的!!", "好的！！"),
        ("(English only)", "(English only)"),
        ("", ""),
    ],
)
def test_prose_punctuation_becomes_fullwidth(text, expected):
    assert to_fullwidth(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "你好,请稍等.",
        "等一下...好的",
        "价格是3.5元,共1,000件.",
        "运行`a,b`即可.",
        "代码:\n```\nprint(1, 2).\n```\n完成.",
        "请访问https://a.example/x,y.",
    ],
)
def test_streaming_in_any_split_gives_the_same_text(text):
    expected = to_fullwidth(text)
    for size in (1, 2, 3, 5):
        converter = FullwidthPunctuation()
        out = "".join(converter.feed(text[i : i + size]) for i in range(0, len(text), size))
        assert out + converter.finish() == expected, size


def test_trailing_punctuation_is_held_until_decided():
    converter = FullwidthPunctuation()
    assert converter.feed("你好.") == "你好"
    assert converter.feed(".") == ""
    assert converter.feed(".再见") == "……再见"


@pytest.mark.parametrize(
    "char", ["中", "㐀", "\U00020000", "\U0002a6df", "\U00030000", "\uf900", "。", "，", "…"]
)
def test_every_cjk_block_counts_as_chinese(char):
    # Extension B and later (U+20000...) are outside the BMP, where hand-written ranges stop.
    assert is_cjk(char)
    assert to_fullwidth(f"{char}好,谢谢.") == f"{char}好，谢谢。"
    assert to_fullwidth(f"好{char},谢谢") == f"好{char}，谢谢"


@pytest.mark.parametrize("char", ["a", "1", " ", "é", "あ", "한"])
def test_other_scripts_are_not_chinese(char):
    assert not is_cjk(char)
