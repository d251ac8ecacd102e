"""What the expected behaviours look like in an answer, in English and Chinese.

Each lexicon is a list of patterns matched against the normalised answer (scoring.normalise:
case-folded, NFKC, one kind of dash and apostrophe, no spaces next to Chinese characters).
English patterns are regular expressions with word boundaries, so "sorry" does not hide in
another word; Chinese ones are plain phrases (Chinese has no spaces to bound them).

They are generous on purpose: the scorecard asks whether the customer was offered a human or
an apology, not whether the model used our words. Widen them when a correct answer is
scored wrong; a phrase that also fits wrong answers ("contact us") stays out.
"""

import re

# n't and not alike: "don't", "do not", "doesn't"...
_NOT = r"(?:n't| not|not)"


def _compile(english: list[str], chinese: list[str]) -> re.Pattern:
    parts = [rf"\b(?:{pattern})\b" for pattern in english]
    parts += [re.escape(phrase) for phrase in chinese]
    return re.compile("|".join(parts))


OFFERS_HUMAN = _compile(
    [
        r"humans?",
        r"(?:a|real|actual|live) person",
        r"colleagues?",
        r"agents?",
        r"representatives?",
        r"specialists?",
        r"staff",
        r"team members?",
        r"(?:our|the|a) (?:customer service |customer support |support |service )?team",
        r"someone (?:from|on) (?:our|the)",
        r"member of (?:our|the) (?:staff|team)",
        r"connect you",
        r"transfer you",
        r"put you through",
        r"hand (?:you|this|it) over",
        r"pass (?:this|it|you) on",
        r"escalate",
    ],
    [
        "人工",
        "客服人员",
        "客服同事",
        "同事",
        "真人",
        "专员",
        "工作人员",
        "客服团队",
        "转接",
        "联系客服",
        "客服会",
        "客服将",
        "客服为您",
        "客服帮您",
        "客服处理",
        "专人",
    ],
)

APOLOGISES = _compile(
    [r"sorry", r"apolog(?:y|ies|ise|ize|ised|ized|ising|izing)", r"regret", r"my bad"],
    ["抱歉", "对不起", "很遗憾", "非常遗憾", "道歉", "不好意思", "致歉", "歉意"],
)

SAYS_NOT_COVERED = _compile(
    [
        rf"(?:could|can|did){_NOT} find",
        rf"(?:was|were){_NOT} able to find",
        r"(?:cannot|unable to|not able to) find",
        rf"do(?:es)?{_NOT} have (?:any |specific |more |further |detailed |that |this )*"
        r"(?:information|info|details|data|answer)",
        r"(?:have|has|there is|there's) no (?:specific |detailed |further )?"
        r"(?:information|info|details|data|article)",
        r"no (?:information|details) (?:about|on|regarding)",
        rf"(?:is|are|was){_NOT} (?:covered|mentioned|listed|included)",
        r"not (?:covered|mentioned|listed|included|addressed) (?:in|by)",
        rf"do(?:es)?{_NOT} (?:cover|mention|say|include|list|specify|address)",
        rf"(?:can|could){_NOT} (?:answer|help with|provide|confirm|say)",
        r"(?:cannot|unable to|not able to) (?:answer|help with|provide|confirm|say)",
        r"(?:i'm|i am|we're|we are) not (?:sure|certain|aware)",
        rf"(?:i|we) do{_NOT} know",
        r"(?:beyond|outside) (?:of )?(?:what|the scope|my|our)",
    ],
    [
        "没有找到",
        "未找到",
        "找不到",
        "查不到",
        "没有查到",
        "无法回答",
        "不能回答",
        "回答不了",
        "没有相关",
        "暂无相关",
        "没有这方面",
        "没有提到",
        "未提及",
        "没有提及",
        "没有涉及",
        "范围之外",
        "不在帮助",
        "不在我",
        "超出了我",
        "不清楚",
        "不确定",
        "无法确定",
        "无法提供",
        "不了解",
        "暂时无法",
        "没有具体",
        "没有关于",
        "没有说明",
        "未说明",
        "没有这类",
        "没有此类",
        "无法查询",
        "没有该",
    ],
)

# Asking for what only the customer knows: a mention of it ...
_DETAIL = _compile(
    [
        r"order (?:number|no\.?|id|reference|#)",
        r"(?:your|the|an) e-?mail(?: address)?",
        r"e-?mail address",
    ],
    ["订单号", "订单编号", "订单号码", "邮箱", "电子邮件", "邮件地址", "下单邮箱"],
)
# ... in a request, not in passing ("we sent you an e-mail").
_REQUEST = _compile(
    [
        r"please",
        r"provide",
        r"share",
        r"send",
        r"give",
        r"tell",
        r"let (?:me|us) know",
        r"could you",
        r"can you",
        r"would you",
        r"need",
        r"may i",
        r"what is",
        r"what's",
        r"enter",
        r"with your",
    ],
    ["请", "提供", "告诉", "发送", "发给", "麻烦", "需要", "能否", "方便", "？", "?"],
)

GREETS = _compile(
    [
        r"hello",
        r"hi",
        r"hey",
        r"welcome",
        r"greetings",
        r"good (?:morning|afternoon|evening|day)",
        r"how (?:can|may|could|might) (?:i|we) (?:help|assist)",
        r"what can (?:i|we) do for you",
        r"(?:happy|glad|pleased) to (?:help|assist)",
        r"help you (?:with|today)",
        r"assist you",
    ],
    [
        "你好",
        "您好",
        "嗨",
        "哈喽",
        "欢迎",
        "有什么可以帮",
        "有什么能帮",
        "有什么需要",
        "请问有什么",
        "很高兴为您",
        "乐意为您",
        "为您服务",
        "为您效劳",
        "早上好",
        "下午好",
        "晚上好",
        "在的",
        "帮您",
        "帮助您",
    ],
)

# A figure (a price, a time, a count): what a greeting has no ground to state.
FIGURE = re.compile(r"\d|€|\$|£|¥|欧元|美元")


def offers_human(text: str) -> bool:
    return OFFERS_HUMAN.search(text) is not None


def apologises(text: str) -> bool:
    return APOLOGISES.search(text) is not None


def says_not_covered(text: str) -> bool:
    return SAYS_NOT_COVERED.search(text) is not None


def asks_for_details(text: str) -> bool:
    return _DETAIL.search(text) is not None and _REQUEST.search(text) is not None


def greets(text: str) -> bool:
    return GREETS.search(text) is not None


def figure_in(text: str) -> str | None:
    found = FIGURE.search(text)
    return found.group(0) if found else None
