"""Text into search terms, the same way for passages and questions, in any mix of languages.

- Latin-script words: NFKC (full-width letters and digits become ASCII), case-folded, English
  stop words dropped, Snowball-stemmed (PyStemmer), so "shipped" finds "shipping".
- Chinese runs: segmented into words by jieba (rjieba, the Rust port), in search mode, which
  also emits the shorter words inside a long one ("保修期" → 保修, 保修期): a question with
  "保修" then matches a page that says "保修期". Function and question words are dropped.
- Anything else that is a word character (kana, hangul, ...) is one term per run.
"""

import re
import threading
import unicodedata

import rjieba
import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A Chinese run, or a run of other word characters (letters, digits; not "_").
_RUNS = re.compile(rf"([{_CJK}]+)|([^\W_{_CJK}]+)")

# NLTK's English list (as bm25s ships it) plus what customers say around a question.
STOPWORDS_EN = frozenset(STOPWORDS_EN_PLUS) | {
    "hi",
    "hello",
    "hey",
    "please",
    "thanks",
    "thank",
    "would",
    "could",
    "also",
    "get",
    "got",
    "can",
    "may",
    "might",
    "must",
    "shall",
    "us",
    "let",
    "know",
    "tell",
    "want",
    "need",
    # Quantifiers and indefinite pronouns, beside NLTK's "some", "any", "few": "how many days
    # do I have to send something back" asks about days and sending back.
    "many",
    "much",
    "something",
    "anything",
    "someone",
    "anyone",
}
# Function words, pronouns and question words only: bm25s's long Chinese list also drops
# words a help desk needs (安全, 问题, 需要, 使用, 处理).
STOPWORDS_ZH = frozenset(
    """
的 地 得 了 着 过 吗 呢 吧 啊 呀 哦 嘛 么 哪 呗 啦 之 其 与 和 及
或 而 并 且 但 就 都 也 还 又 再 才 很 太 更 最 我 你 您 他 她 它
我们 你们 他们 她们 咱们 自己 这 那 这个 那个 这些 那些 这样 那样 这里
那里 这儿 那儿 是 在 有 被 把 给 对 向 从 到 为 以 于 让 跟 比 个 些
一 一个 一下 一些 一点 上 下 里 中 什么 怎么 怎样 怎么样 如何 为什么 为何
哪里 哪儿 哪个 哪些 多少 几 谁 是否 是不是 能否 可否 想 要 会 能 能够
可以 可能 应该 请 请问 请教 麻烦 谢谢 你好 您好 好的 好 嗯 哈 喂 如果
因为 所以 但是 然后 或者 还是 已经 就是 只是 不 没 没有 无法 不能 不会 怎
样 可 该
多久 多长 多长时间 几时 几点 几天 几年 几个 怎么办 一直 用
""".split()
)

# British and American names of the same thing, as one term: a help centre written in one
# and a customer writing the other ("my package" for what the page calls a parcel) still meet.
# Whole words only, before stemming, on pages and questions alike.
VARIANTS = {
    "package": "parcel",
    "packages": "parcels",
    "cart": "basket",
    "carts": "baskets",
    "zipcode": "postcode",
    "zipcodes": "postcodes",
    "color": "colour",
    "colors": "colours",
    "center": "centre",
    "centers": "centres",
    "catalog": "catalogue",
    "catalogs": "catalogues",
    "jewelry": "jewellery",
    "aluminum": "aluminium",
    "gray": "grey",
    "favorite": "favourite",
    "favorites": "favourites",
    # Not a spelling but a stem the stemmer leaves apart: "Can I pay in cash?" asks about the
    # payment methods.
    "payment": "pay",
    "payments": "pay",
    # "How long will you hold my order?" asks what the page says as "your order is kept".
    "hold": "keep",
    "holds": "keep",
    "holding": "keep",
    "held": "keep",
    "kept": "keep",
    "keeps": "keep",
    "keeping": "keep",
}

# What customers call by another name than help centres do, said as the pages say it, on pages
# and questions alike, before the words are split: "Which delivery companies do you use?" asks
# about the carriers; "€50" is fifty euros ("Do I pay shipping on 60 euros?").
_RENAMES = (
    (
        re.compile(r"\b(delivery|shipping|parcel|postal) (?:company|companies|firms?)\b"),
        r" \1 carrier ",
    ),
    (re.compile(r"\bcouriers?\b"), " carrier "),
    (re.compile(r"\bswap(?:s|ped|ping)?\b"), " exchange "),
    (re.compile(r"\b(?:my |your |the )?money back\b"), " refund money "),
    (
        re.compile(
            r"\bsen(?:d|t|ding|ds) (?:(?:it|them|this|that|something|items?|things?|"
            r"products?|orders?|parcels?) )?back\b"
        ),
        " return ",
    ),
    (re.compile(r"快递公司|物流公司|快递商"), "承运商"),
    # "Can I swap it for another style?" (换成别的款式) asks about exchanges (换货).
    (re.compile(r"换成|调换|换一个|换个"), "换货"),
    # Sending to a place (寄到法国, 发往中国) is what pages call delivery (配送).
    (re.compile(r"那?(?:寄到|寄往|寄去|发到|发往|送到)"), " 配送到 "),
    # "多长时间" asks how long, not about a time: its 时间 must not meet the page's "维修时间".
    (re.compile(r"多长时间|多少时间|多长的时间|要多久"), "多久"),
    # Paying the courier in cash is what pages call cash on delivery.
    (
        re.compile(
            r"\bcash (?:when|once|as soon as) (?:the |my |it |its )?(?:parcel|package|order)?"
            r" ?(?:arrives|comes|is delivered|gets delivered)\b"
        ),
        " cash on delivery ",
    ),
    (re.compile("€"), " euro "),
    (re.compile("£"), " pound "),
    (re.compile(r"\$"), " dollar "),
)

_local = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    # PyStemmer objects are not safe to share between threads: one per thread.
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer


def terms(text: str) -> list[str]:
    """The search terms of `text`, in order, repeats kept (BM25 counts them)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    for pattern, name in _RENAMES:
        text = pattern.sub(name, text)
    out: list[str | None] = []  # None: a Latin word, stemmed below
    words: list[str] = []
    for chinese, other in _RUNS.findall(text):
        if chinese:
            out.extend(_chinese_terms(chinese))
        elif other.isdigit() or (len(other) > 1 and other not in STOPWORDS_EN):
            words.append(VARIANTS.get(other, other))
            out.append(None)
    if not words:
        return out  # type: ignore[return-value]
    # All Latin words in one call to the C library, then back in their places.
    stems = iter(_stemmer().stemWords(words))
    return [next(stems) if term is None else term for term in out]


def _chinese_terms(run: str) -> list[str]:
    """The words of a Chinese run, each followed by its characters: customers ask with one
    character where a page uses a word ("能换吗" for 换货, "修" for 维修, "查" for 查看), and
    jieba cuts a question differently from a page ("没收到" gives 没收, "confiscate"). The
    characters let those still meet; idf keeps the common ones from counting for much."""
    out = []
    for word in rjieba.cut_for_search(run):
        if word in STOPWORDS_ZH:
            continue
        out.append(word)
        if len(word) > 1:
            out.extend(c for c in word if c not in STOPWORDS_ZH)
    return out


def has_chinese(text: str) -> bool:
    return re.search(f"[{_CJK}]", text) is not None


def guess_language(text: str) -> str:
    """ "zh" when at least a fifth of the letters are Chinese characters, else "en": for a
    question or a file that names no language."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "en"
    chinese = sum(1 for c in letters if re.match(f"[{_CJK}]", c))
    return "zh" if chinese * 5 >= len(letters) else "en"


def primary_language(tag: str) -> str:
    """The primary subtag of a BCP 47 tag, lower case: "zh-CN" → "zh", "en_US" → "en"."""
    return re.split(r"[-_]", tag.strip(), maxsplit=1)[0].lower()
