"""The product's own words about actions, per language: one honest sentence when a call did not
give the customer a result, and the question before a call that changes something.

Honest means it says what happened (we could not reach the system, we found nothing, you
need to sign in) and never pretends a call worked; it gives no internal detail (hosts, status
codes, variable names), which is for staff and stays on the call's record.
"""

from chat.actions import localized, placeholders

# Which sentence each outcome reason gets (chat/actions/outcome.py); a reason not listed gets
# its status's sentence.
_BY_REASON = {
    "invalid_arguments": "check_details",
    "bad_url": "check_details",  # a value that cannot go into the URL, such as ".."
    "not_verified": "sign_in",
    "limit_answer": "limit",
    "limit_conversation": "limit",
    "http_404": "not_found",
    "http_409": "not_accepted",
    "http_422": "not_accepted",
}
_BY_STATUS = {
    "refused": "unavailable",
    "error": "error",
    "timeout": "timeout",
    "bad_response": "bad_response",
}

_TEXTS = {
    "en": {
        "check_details": "I couldn't look that up with the details I was given. Could you "
        "check them and tell me again?",
        "sign_in": "Please sign in on our site first, so that I can look into your account.",
        "limit": "I can't look anything else up in this conversation right now. Please try "
        "again later, or ask for a human agent.",
        "not_found": "I couldn't find anything matching those details. Could you check them?",
        "not_accepted": "Our system did not accept this change, for example because it is "
        "too late for it now. A human agent can look into it with you.",
        "unavailable": "I can't do that from here right now. Would you like me to connect you "
        "with a human agent?",
        "error": "Our system couldn't complete that just now. Please try again later, or ask "
        "for a human agent.",
        "timeout": "Our system took too long to answer, so I couldn't complete that. Please "
        "try again in a moment.",
        "bad_response": "Our system answered, but not in a way I could read, so I can't tell "
        "you the result. Please try again later, or ask for a human agent.",
        "confirm": "Shall I go ahead? {what}",
        "confirm_default": "I'm about to do this: {what}.",
        "cancelled": "All right, I haven't done it.",
    },
    "zh": {
        "check_details": "根据您提供的信息，我没能查到结果。请核对后再告诉我一次。",
        "sign_in": "请先在我们的网站登录，我才能查询您的账户信息。",
        "limit": "本次对话暂时无法再查询更多信息。请稍后再试，或要求转接人工客服。",
        "not_found": "没有找到与这些信息相符的记录，请核对一下。",
        "not_accepted": "我们的系统没有接受这项更改，例如可能已经来不及了。"
        "人工客服可以帮您进一步处理。",
        "unavailable": "我暂时无法在这里办理此事。需要为您转接人工客服吗？",
        "error": "我们的系统暂时无法完成此操作。请稍后再试，或要求转接人工客服。",
        "timeout": "我们的系统响应超时，此操作没有完成。请稍后再试。",
        "bad_response": "我们的系统有回复，但我无法读取结果，所以不能告诉您结果。"
        "请稍后再试，或要求转接人工客服。",
        "confirm": "要继续吗？{what}",
        "confirm_default": "我将执行以下操作：{what}。",
        "cancelled": "好的，我没有执行此操作。",
    },
}


def _lang(language: str) -> str:
    return "zh" if (language or "").lower().startswith("zh") else "en"


def failure(*, status: str, reason: str, language: str) -> str:
    """The customer's sentence for a call that gave no result ("" for one that did)."""
    if status == "ok":
        return ""
    name = _BY_REASON.get(reason) or _BY_STATUS.get(status, "error")
    return _TEXTS[_lang(language)][name]


def confirmation(
    *, confirm_text: str | dict, description: str, arguments: dict, language: str
) -> str:
    """The question before a call that changes something: the action's confirm_text (in the
    conversation's language, chat/actions/localized.py) with the arguments filled in, else its
    description, then "Shall I go ahead?"."""
    texts = _TEXTS[_lang(language)]
    confirm_text = localized.template_for(confirm_text, language)
    if confirm_text:
        what = placeholders.fill(confirm_text, lambda name: _argument(arguments, name))
        return texts["confirm"].format(what=what)
    return texts["confirm"].format(
        what=texts["confirm_default"].format(what=description.strip().rstrip("."))
    )


def cancelled(language: str) -> str:
    return _TEXTS[_lang(language)]["cancelled"]


def _argument(arguments: dict, name: str) -> str:
    value = arguments.get(name)
    return "" if value is None else str(value)
