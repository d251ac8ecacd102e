"""What the product promises a customer whatever the model does: decided here, not asked of it.

A small model does not follow "offer a human", "answer in Chinese", "don't repeat the question"
or "ask for the order number" reliably (measured on the scorecard, `manage.py eval_answers`),
so the answer run (chat.answering) asks these functions and acts on their answers:

- before the model: a message that is only a greeting or thanks gets the product's reply; a
  question no help-centre passage covers gets the product's "not in the help centre, here is
  a human" when the bot profile says so, or its request for the order number when the
  question is about the customer's own order; a complaint is marked, so the answer opens with
  an apology and ends with the offer of a human; a question about the customer's own order
  without its number is marked, so the answer ends by asking for it if the model did not;
- after the model: an answer in the wrong script, or one that only repeats the question, is
  asked again once with the rule restated; a grounded answer that states a figure or a name
  the model was not given, or one that broke a rule twice, is replaced by the help centre's
  own statements (chat/knowledge/extract.py), or by the localised fallback when there are
  none.

Loops and length are the worker's (inference_worker.textguards), which stops the engine.

Every decision is a named guard: stored on the bot message (`Message.guards`), counted in
`cs_chat_guards_total`, and shown in the console and admin. Customer channels only: the
OpenAI-compatible API keeps OpenAI's semantics and gets the loop guard alone.
"""

from __future__ import annotations

import re
import unicodedata

from inference_worker.textguards import han_count, han_share, letter_word_count

# Guard names: stored on messages, metric labels, finish reasons of the product's own answers.
NOT_COVERED = "not_covered"  # no passage covers the question: the product said so
COMPLAINT = "complaint"  # apology first, offer of a human last
ASK_DETAILS = "ask_details"  # the product asked for the order number the model did not
LANGUAGE = "language"  # the answer was in another script: asked again, or replaced
ECHO = "echo"  # the answer only repeated the question: asked again, or replaced
REPETITION = "repetition"  # the worker stopped a loop (inference_worker.textguards)
LENGTH = "length"  # the worker cut an overlong answer back to a sentence
GREETING = "greeting"  # a greeting or thanks alone: the product answered it
FIGURES = "figures"  # the answer stated a figure the model was not given
# The answer said yes where the help centre's line says no, or to what no passage names.
POLARITY = "polarity"
NAMES = "names"  # the answer named a carrier, brand or product the model was not given
# An answer made from a look-up (chat/actions) that does not say what it found: the result
# replaced it.
RESULT = "result"
CONFIRM = "confirm"  # an action that changes something: the product asked the customer first
SIGN_IN = "sign_in"  # an action for verified customers only: the visitor was asked to sign in
ACTION_FAILED = "action_failed"  # the company's back end gave no result: said so, a human offered
QUOTED = "quoted"  # the help centre's own statements replaced an answer that broke a rule
ALL = (
    NOT_COVERED,
    COMPLAINT,
    ASK_DETAILS,
    LANGUAGE,
    ECHO,
    REPETITION,
    LENGTH,
    GREETING,
    FIGURES,
    POLARITY,
    NAMES,
    RESULT,
    QUOTED,
    CONFIRM,
    ACTION_FAILED,
    SIGN_IN,
)

# --- the product's own words, per language ------------------------------------------------------

_TEXTS = {
    "en": {
        NOT_COVERED: "I'm sorry, I couldn't find this in our help centre, and I'd rather not "
        "guess. Would you like me to connect you with a human agent?",
        "apology": "I'm very sorry about this.",
        "offer_human": "If you'd like, I can connect you with a human agent.",
        SIGN_IN: "To look into your order I need to know it is you: please sign in on our "
        "website first, or tell me the order number together with the e-mail address you "
        "ordered with.",
        ASK_DETAILS: "Could you tell me your order number (or the e-mail address you ordered "
        "with), so that we can look into it?",
        "restate_language": "Answer only in {language}.",
        "restate_echo": "Do not repeat the customer's question: answer it.",
        "greeting": "Hello! How can I help you today?",
        "thanks": "You're welcome! Is there anything else I can help you with?",
    },
    "zh": {
        NOT_COVERED: "抱歉，我在帮助中心没有找到这个问题的答案，不想给您不准确的信息。"
        "需要为您转接人工客服吗？",
        "apology": "非常抱歉给您带来不好的体验。",
        "offer_human": "如果需要，我可以为您转接人工客服。",
        ASK_DETAILS: "请提供您的订单号（或下单时使用的邮箱），以便我们为您查询。",
        SIGN_IN: "为了查询您的订单，需要先确认您的身份：请先在我们的网站登录，"
        "或告诉我订单号和下单时使用的邮箱。",
        "restate_language": "只用{language}回答。",
        "restate_echo": "不要重复客户的问题，请直接回答。",
        "greeting": "您好！请问有什么可以帮您？",
        "thanks": "不客气！还有什么可以帮您的吗？",
    },
}


def _lang(language: str) -> str:
    return "zh" if (language or "").lower().startswith("zh") else "en"


def text(name: str, language: str) -> str:
    """The product's own sentence `name` in the conversation's language (English otherwise)."""
    return _TEXTS[_lang(language)][name]


# --- before the model ---------------------------------------------------------------------------

_STRIP = re.compile(r"[\s\W_]+", re.UNICODE)

_GREETINGS = re.compile(
    r"^(?:(?:hi|hello|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening|day))"
    r"(?: there| team| everyone| all)?"
    # "Hello, is anyone there?": a greeting that only checks somebody answers.
    r"(?: (?:is )?(?:any ?one|any ?body|some ?one) (?:there|around|here|online))?|"
    r"(?:is )?(?:any ?one|any ?body) (?:there|around|here|online)|are you there|"
    r"你好|您好|嗨|哈喽|哈啰|早上好|上午好|下午好|晚上好|在吗|在不在|有人吗|你好呀|您好呀|"
    r"你好 在吗|您好 在吗|你好 有人吗|您好 有人吗)$",
    re.IGNORECASE,
)
_THANKS = re.compile(
    r"^(?:thanks|thank you|thank you very much|thank you so much|thanks a lot|many thanks|thx|"
    r"ty|cheers|great thanks|ok thanks|okay thanks|"
    r"谢谢|谢谢你|谢谢您|多谢|感谢|非常感谢|好的谢谢)$",
    re.IGNORECASE,
)


def _plain(text_: str) -> str:
    """Lower case, punctuation, emoji and spacing gone: "Hello!!  " and "hello" are one."""
    text_ = unicodedata.normalize("NFKC", text_).casefold().strip()
    return _STRIP.sub(" ", text_).strip()


def is_greeting(question: str) -> bool:
    """The message is only a greeting or thanks."""
    return greeting_reply(question, "en") is not None


def greeting_reply(question: str, language: str) -> str | None:
    """The product's reply to a message that is only a greeting or thanks; None otherwise.
    No article covers "hello", and a small model asked to answer one from the help centre
    states a price or a policy nobody asked for: the product answers, at once."""
    plain = _plain(question)
    if not plain or len(plain) > 40:
        return None
    if _GREETINGS.match(plain):
        return text("greeting", language)
    if _THANKS.match(plain):
        return text("thanks", language)
    return None


# Words of an unhappy customer, in English and Chinese. Matched as words in English (so
# "unbroken" is not "broken") and as substrings in Chinese. Measured on the scorecard's
# complaints and on its other questions (none of which may match).
_COMPLAINT_EN = re.compile(
    r"\b(?:unacceptable|terrible|awful|horrible|horrendous|worst|disgusting|ridiculous|"
    r"outrageous|pathetic|furious|angry|annoyed|upset|disappointed|disappointing|"
    r"complain(?:t|ts|ing|ed)?|rude|scam(?:med)?|fraud|useless|incompetent|shameful|"
    r"fed up|sick of|never again|not happy|unhappy|very bad|so bad|bad service|"
    r"still (?:not|hasn'?t|haven'?t|no)|nobody (?:answers|replied|helps)|no one (?:answers|helps)|"
    r"arrived (?:broken|damaged|smashed|cracked)|(?:came|was|is) (?:broken|damaged|smashed)|"
    r"waste of|wtf|what the hell|where the hell|i want my money back|refund me now|"
    r"charged (?:me |my card )?twice|double[- ]charged|fix this|sort this out|this is a joke|"
    r"how dare|what kind of service|nobody tells me|no one tells me|ignored)\b",
    re.IGNORECASE,
)
_COMPLAINT_ZH = re.compile(
    r"投诉|太差|很差|真差|差劲|垃圾|生气|气死|失望|不满|愤怒|骗子|欺骗|坑人|太慢了|怎么还没|还没到|"
    r"还没收到|一直没|坏了|破损|损坏|摔坏|态度(?:很|太|真)?(?:差|恶劣)|恶劣|离谱|无语|受不了|"
    r"退钱|糟糕|差评|什么破|搞什么|太过分|不像话|没人管|没人理|扣了(?:我)?两次|重复扣款|"
    r"赶紧|什么服务|极差|粉碎|质量太差|不负责"
)


def is_complaint(question: str) -> bool:
    return bool(_COMPLAINT_EN.search(question) or _COMPLAINT_ZH.search(question))


_OWN_ORDER_EN = re.compile(
    r"\b(?:(?:my|our) (?:(?:most )?(?:recent|latest|last|newest|previous) )?"
    r"(?:order|orders|parcel|package|delivery|shipment|refund|return|purchase)|"
    r"order status|status of (?:my|the) order|cancel (?:my |the |an )?order|"
    r"track(?:ing)? (?:my|the) (?:order|parcel|package))\b",
    re.IGNORECASE,
)
_OWN_ORDER_ZH = re.compile(
    r"我(?:的|(?:最近|上次|最新|刚)的?)(?:订单|包裹|快递|退款|退货|货)|订单(?:状态|到哪|在哪|怎么还)|"
    r"取消(?:我的)?订单|"
    r"查(?:一下|询)?(?:我的)?订单|物流到哪|包裹到哪|快递到哪"
)
# An order number or an e-mail address already given: nothing to ask for. Order numbers come
# in every shape ("1234", "A1001", "#AB-77", "订单12345", "order no. 123"): a number of four
# digits or more, letters then three digits or more, a code after "#" or after "order
# number"; Chinese text puts no space around them, so the edges are ASCII, not \b.
_DETAILS_GIVEN = re.compile(
    r"(?<![\d.,])\d{4,}(?!\d)"
    r"|(?<![A-Za-z\d])[A-Z]{1,4}-?\d{3,}(?!\d)"
    r"|#\s?[A-Z\d][A-Z\d-]{2,}"
    r"|order\s*(?:number|no\.?|id)\s*(?:is\s*)?:?\s*[A-Z-]*\d"
    r"|[\w.+-]+@[\w-]+\.[\w.]+",
    re.IGNORECASE,
)
_ASKS_DETAILS = re.compile(
    r"order (?:number|no\.?|id)|e-?mail|订单号|订单编号|单号|邮箱|电子邮件", re.IGNORECASE
)


def needs_order_details(question: str) -> bool:
    """The customer asks about their own order and gave no order number or e-mail."""
    own = _OWN_ORDER_EN.search(question) or _OWN_ORDER_ZH.search(question)
    return bool(own) and not _DETAILS_GIVEN.search(question)


def asks_for_details(answer: str) -> bool:
    return bool(_ASKS_DETAILS.search(answer))


_OFFERS_HUMAN = re.compile(
    r"human|agent|colleague|real person|someone from our team|人工|客服人员|真人|同事",
    re.IGNORECASE,
)


def offers_human(answer: str) -> bool:
    return bool(_OFFERS_HUMAN.search(answer))


# --- after the model ----------------------------------------------------------------------------

# Languages written in Chinese characters, and those written without them: only these are
# checked (Japanese mixes both, so its answers are not judged by script).
_HAN_LANGUAGES = {"zh"}
_SPACED_LANGUAGES = {
    "en",
    "de",
    "fr",
    "es",
    "it",
    "nl",
    "pt",
    "sv",
    "da",
    "no",
    "nb",
    "fi",
    "pl",
    "cs",
    "ru",
    "uk",
    "tr",
    "id",
    "ms",
    "vi",
}


# Chinese characters and words an answer needs before its script is judged.
_JUDGED_FROM = 5


def wrong_language(answer: str, language: str) -> bool:
    """The answer is written in another script than the conversation's language: a Chinese
    conversation answered mostly without Chinese characters, or the reverse. Brand names,
    numbers and links in the other script do not count against an answer."""
    primary = (language or "en").split("-")[0].lower()
    if han_count(answer) + letter_word_count(answer) < _JUDGED_FROM:
        return False  # too short to tell ("您好, thanks!")
    share = han_share(answer)
    if share is None:
        return False
    if primary in _HAN_LANGUAGES:
        return share < 0.5
    if primary in _SPACED_LANGUAGES:
        return share > 0.5
    return False


# Words an answer may add to the question and still say nothing new ("Hello! Your question:").
_EMPTY_WORDS = frozenset(
    "a an the i you we your our my me us it is are do does can could will would please hello "
    "hi dear customer question thanks thank".split()
)
_ANSWER_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)


def is_echo(answer: str, question: str) -> bool:
    """The answer only repeats the question (perhaps with a greeting or a question mark more):
    it adds fewer than two words of its own (three Chinese characters or digits). "No, you
    cannot pay in cash on delivery" adds "no" and "cannot": an answer, not an echo."""
    plain_answer, plain_question = _plain(answer), _plain(question)
    if not plain_answer or not plain_question:
        return False
    asked_words = set(_ANSWER_WORD.findall(plain_question))
    new_words = [
        word
        for word in _ANSWER_WORD.findall(plain_answer)
        if not _HAN_ONLY.fullmatch(word) and word not in asked_words and word not in _EMPTY_WORDS
    ]
    asked_chars = set(plain_question)
    new_han = [
        char
        for char in plain_answer
        if _HAN_ONLY.fullmatch(char) and char not in asked_chars and char not in "您你好的吗呢"
    ]
    if _POLARITY.search(plain_answer) and not _POLARITY.search(plain_question):
        return False  # "Yes, you can." answers a yes/no question
    # ...and it must be the question: most of the question's words (characters) are in it.
    asked = [w for w in asked_words if w not in _EMPTY_WORDS and not _HAN_ONLY.fullmatch(w)]
    asked += [c for c in asked_chars if _HAN_ONLY.fullmatch(c)]
    said = set(_ANSWER_WORD.findall(plain_answer)) | set(plain_answer)
    if not asked or sum(item in said for item in asked) < 0.6 * len(asked):
        return False
    return len(new_words) < 2 and len(new_han) < 3


_POLARITY = re.compile(r"\b(?:yes|no|not|cannot|can't|don't|doesn't)\b|不|没|是的|可以的")
_HAN_ONLY = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")


# --- figures ------------------------------------------------------------------------------------

# A figure: digits with their decimal or time separators, or a range of two ("1–2", "3 to 6",
# "5至12"), written the same way afterwards so that "1-2" finds "1–2".
# A date (2026-12-07) is one figure, not the range 2026-12 and a 07; digits after a letter
# name something (order A1001, model X200) rather than state a figure.
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")
_FIGURE = re.compile(
    r"(?<![A-Za-z\d])(?:\d{4}-\d{1,2}-\d{1,2}(?!\d)|"
    r"\d+(?:[.,:]\d+)*(?:\s*(?:[-–—~～至到]|to)\s*\d+(?:[.,:]\d+)*)?)"
)
# A date written the Chinese way ("2030年1月2日", "1月2日") is the ISO date, or its month and day.
_ZH_DATE = re.compile(r"(?:(\d{4})\s*年\s*)?(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")
_RANGE_MARK = re.compile(r"\s*(?:[-–—~～至到]|to)\s*")
# Numbered list items ("1. Sign in") count steps, and passage numbers ("[2] Shipping") cite:
# neither states a figure.
_LIST_NUMBER = re.compile(r"^\s*\d+[.)、]\s+|\[\d+\]", re.MULTILINE)
_EN_NUMBERS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_EN_NUMBERS.update(thirty="30", forty="40", fifty="50", sixty="60", ninety="90")
# Number words before a unit of time or money ("two years", "five business days", "三年",
# "五个工作日") are figures too: the model writes "three years" where the passage says "two".
_EN_WORD_FIGURE = re.compile(
    r"\b(" + "|".join(_EN_NUMBERS) + r")(?=[- ](?:(?:business|working|calendar)[- ])?"
    r"(?:years?|days?|weeks?|months?|hours?|minutes?|euros?)\b)",
    re.IGNORECASE,
)
_ZH_DIGITS = {
    "零": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_ZH_WORD_FIGURE = re.compile(
    r"([零一二两三四五六七八九十]{1,3})(?=个?(?:工作日|年|天|周|星期|个月|月|小时|分钟|欧元|元))"
)


def _zh_number(word: str) -> str:
    """一 … 九十九 in digits."""
    if "十" not in word:
        return "".join(str(_ZH_DIGITS[c]) for c in word)
    tens, _, ones = word.partition("十")
    return str(
        (_ZH_DIGITS.get(tens, 1) if tens else 1) * 10 + (_ZH_DIGITS.get(ones, 0) if ones else 0)
    )


def _iso_date(match: re.Match) -> str:
    year, month, day = match.groups()
    # A month and day alone read as a told ISO date's month and day do ("01-02": figures(...,
    # month_days=True)).
    day_ = f"{int(month):02d}-{int(day):02d}"
    return f" {year}-{day_} " if year else f" {day_} "


def figures(text_: str, *, month_days: bool = False) -> set[str]:
    """The figures `text_` states, each written one way: "1–2" and "1 to 2" as "1-2", "4,95"
    as "4.95", "two years" as "2" (list and passage numbers are not figures). A date is one
    figure; with `month_days`, also its month and day ("2026-12-07" states "12-07" too: what
    the model was told, said without the year)."""
    text_ = unicodedata.normalize("NFKC", text_)
    text_ = _LIST_NUMBER.sub(" ", text_)
    text_ = _ZH_DATE.sub(_iso_date, text_)
    text_ = _EN_WORD_FIGURE.sub(lambda m: _EN_NUMBERS[m.group(1).lower()], text_)
    text_ = _ZH_WORD_FIGURE.sub(lambda m: _zh_number(m.group(1)), text_)
    found = {_RANGE_MARK.sub("-", each).replace(",", ".") for each in _FIGURE.findall(text_)}
    if month_days:
        found.update(f"{date.group(2)}-{date.group(3)}" for date in _DATE.finditer(text_))
    return found


def unsupported_figures(answer: str, told: str) -> list[str]:
    """The figures of `answer` that `told` (everything the model was given: the rules, the
    passages, the conversation) never states: a price, a time or a count the model made up.
    "approximately 2 business days" from a passage that says "1–2" is one: a range is one
    figure, so "2" alone is not in it."""
    given = figures(told, month_days=True)
    return sorted(figure for figure in figures(answer) if figure not in given)


# A name in English text: a capitalised word (or several: "American Express") that does not
# begin a sentence, or any Latin word in Chinese text ("FedEx" in "我们用 FedEx 配送"). Words
# every answer may capitalise are not names.
_NAME_EN = re.compile(r"(?<![.!?:;\n]\s)(?<![.!?:;\n])(?<!^)\b([A-Z][\w&'-]*(?:\s+[A-Z][\w&'-]*)*)")
_NAME_IN_CHINESE = re.compile(r"[A-Za-z][A-Za-z&'-]+")
_NOT_NAMES = frozenset({"i", "i'm", "i'd", "i'll", "i've", "ok", "ai", "faq", "id", "e-mail"})


def unsupported_names(answer: str, told: str) -> list[str]:
    """The names of `answer` that `told` (everything the model was given) never says: a small
    model fills a list of carriers or payment methods with ones it knows ("FedEx, UPS and
    Amazon" for a shop that ships with PostNL, DHL and UPS). Compared word by word, without
    case: "Acorn Home lamps" names nothing new when the passages say "Acorn Home"."""
    answer = unicodedata.normalize("NFKC", answer)
    given = {
        word.casefold() for word in re.findall(r"[\w&'-]+", unicodedata.normalize("NFKC", told))
    }
    # An answer with no letters at all ("1–2") has no share: it names nothing either way.
    pattern = _NAME_IN_CHINESE if (han_share(answer) or 0) > 0.5 else _NAME_EN
    found = []
    for match in pattern.finditer(answer.strip()):
        words = re.findall(r"[\w&'-]+", match.group())
        new = [w for w in words if w.casefold() not in given and w.casefold() not in _NOT_NAMES]
        if new:
            found.append(" ".join(new))
    return sorted(set(found))


# A question that asks for a figure: a time, a price, a count, a date.
_ASKS_FIGURE = re.compile(
    r"\b(?:how (?:long|much|many|soon|fast|quickly)|when|what (?:time|date|day)|what does .* "
    r"cost|price|fee|charge|costs?)\b|多少|(?<!哪)几|多长|多久|什么时候|何时|哪天|价格|费用|运费",
    re.IGNORECASE,
)


def asks_for_figure(question: str) -> bool:
    return bool(_ASKS_FIGURE.search(question))


def figures_off_the_lines(answer: str, lines: list[str], *, question: str, asked: str) -> bool:
    """Whether a grounded answer's figures are not those of the help centre's line that
    answers the question best (`lines`, best first, chat/knowledge/extract.py), when it states
    any (else of the others): the model took them from another line ("5 business days" of the
    refunds for the 30-day return window; the 3-year warranty of one brand for the 2 years of
    all products), or left out the figure the question asks for. Figures the customer gave
    (`asked`: the conversation's messages) do not count. The quote that replaces such an
    answer holds all the lines, so a figure the model had right is not lost."""
    stated = next((found for found in map(figures, lines) if found), set())
    if not stated:
        return False
    said = figures(answer) - figures(asked)
    if said:
        return not said & stated
    return asks_for_figure(question)


# --- yes or no ----------------------------------------------------------------------------------

_YES_NO_EN = re.compile(
    r"^\W*(?:(?:hi|hello|hey)\W+)?(?:can|could|do|does|did|is|are|was|will|"
    r"would|may|should|have|has)\b",
    re.IGNORECASE,
)
_YES_NO_ZH = re.compile(r"(?:吗|么|能不能|可不可以|是不是|有没有|会不会)[？?。！!\s]*$")
_NEGATION = re.compile(
    r"\b(?:no|not|never|cannot|can't|don't|doesn't|won't|isn't|aren't|nor|without|except|"
    r"unable)\b|n't\b|不|没|无|非|除外|禁止",
    re.IGNORECASE,
)


# Where a question's sentences end: "I'd like to return a gift card. Is that possible?" asks
# yes or no in its second.
_QUESTION_SENTENCE = re.compile(r"[^.!?。！？]+[.!?。！？]*")


def is_yes_no_question(question: str) -> bool:
    return any(
        _YES_NO_EN.search(sentence) or _YES_NO_ZH.search(sentence)
        for sentence in (m.group().strip() for m in _QUESTION_SENTENCE.finditer(question))
    )


# A help-centre line weighing this share of the best one's says as much about the question:
# the polarity guard hears them all.
TIED_LINE_SHARE = 0.9


def says_yes_against(answer: str, line: str, *, question: str) -> bool:
    """Whether a yes/no question's answer affirms what the help centre's line (with its title)
    denies: "Yes, we deliver to a PO box" over "…but not to PO boxes". A small model says
    "yes" to most yes/no questions; an answer that negates anything is left alone."""
    return (
        is_yes_no_question(question)
        and bool(_NEGATION.search(line))
        and not _NEGATION.search(answer)
    )


# What a yes/no question names: a capitalised word after its first ("Bitcoin", "Japan").
# Everyday words ("fix", "live") are said in other words by the pages as often as not, and
# Chinese has no capitals to tell a name by (jieba cuts 比特币 into 比特 and 币): Latin names
# only, as for the names guard.
_NAMED_EN = re.compile(r"(?<=\s)[A-Z][\w&'-]+")


def misses_the_result(answer: str, results: list[str], *, asked: str) -> bool:
    """Whether an answer made from the company's back end's results (`results`, as the
    customer would read them) does not say what they say: none of their figures (a date, an
    amount) or a figure they do not state; with no figures, none of their words; or a "not"
    they do not say ("It has not shipped yet" for an order that shipped). Figures and words
    the customer gave (`asked`: the order number) count for nothing. A small model given the
    result still answers "I don't know where your last order is"."""
    from chat.knowledge import segment  # see yes_to_the_unnamed

    found = " ".join(results)
    customer = figures(asked)
    stated = figures(found, month_days=True) - customer
    said = figures(answer) - customer
    if said - stated:
        return True
    if stated and not said & stated:
        return True
    if not stated:
        words = set(segment.terms(found)) - set(segment.terms(asked))
        if words and not words & set(segment.terms(answer)):
            return True
    return bool(_NEGATION.search(answer)) and not _NEGATION.search(found)


def yes_to_the_unnamed(answer: str, *, question: str, passages: str) -> list[str]:
    """The names of a yes/no question that no passage the model was given uses and its
    affirming answer repeats: "Yes, you can pay with Bitcoin." from a page that lists the
    methods it takes. The help centre said nothing about it, so the yes is the model's."""
    # The search's own stems ("Lamps" is "lamp"); imported here, as chat.knowledge's ranking
    # imports this module.
    from chat.knowledge import segment

    if not is_yes_no_question(question) or _NEGATION.search(answer):
        return []
    given, said = set(segment.terms(passages)), set(segment.terms(answer))
    return sorted(
        name
        for name in _NAMED_EN.findall(question)
        if name.casefold() not in _NOT_NAMES
        and (stems := set(segment.terms(name)))
        and not stems & given
        and stems <= said
    )


# --- repeats -------------------------------------------------------------------------------------

_SENTENCE = re.compile(r"[^.!?。！？；;\n]+[.!?。！？；;\n]*")
# Sentences shorter than this may well recur ("Thank you.").
_MIN_REPEATED_CHARS = 12


def repeated_from(answer: str) -> int | None:
    """Where a sentence the answer said already begins again (the worker's loop guard waits
    for three rounds; a customer notices two): the answer is cut there. None: no repeat."""
    seen: set[str] = set()
    for match in _SENTENCE.finditer(answer):
        key = _plain(match.group())
        if len(key.replace(" ", "")) < _MIN_REPEATED_CHARS:
            continue
        if key in seen:
            return match.start()
        seen.add(key)
    return None


def restated(name: str, language: str, language_name: str) -> str:
    """The rule an answer broke, said again for its second try."""
    return text(name, language).format(language=language_name)
