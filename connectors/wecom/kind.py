"""The WeCom kind of channel (connectors/kinds.py): a WeChat customer-service account
(企业微信「微信客服」) the desk answers through WeCom's API. WeCom calls the desk's callback
URL when there is news; the connectors process reads it with sync_msg and answers with
send_msg."""

from urllib.parse import urlsplit

from chat.models import Inbox
from connectors.kinds import Kind
from connectors.wecom.account import (
    HANDOVER_WECOM,
    HANDOVERS,
    api_base,
    callback_path,
    handover,
)
from connectors.wecom.client import DEFAULT_BASE_URL
from connectors.wecom.crypto import WeComCryptoError, decode_aes_key
from connectors.wecom.sending import send


def _check(settings: dict) -> list[str]:
    found = []
    key = settings["encoding_aes_key"]
    if not key.startswith("${"):
        if len(key) != 43:
            found.append(f"encoding_aes_key: 43 characters, not {len(key)}")
        else:
            try:
                decode_aes_key(key)
            except WeComCryptoError:
                found.append("encoding_aes_key: not the key WeCom's admin generates")
    url = urlsplit(settings.get("api_base") or DEFAULT_BASE_URL)
    if url.scheme not in ("https", "http") or not url.hostname or url.query or url.fragment:
        found.append("api_base: an http(s) URL such as https://qyapi.weixin.qq.com")
    if handover(settings) not in HANDOVERS:
        found.append(f"handover: one of {', '.join(HANDOVERS)}")
    elif handover(settings) == HANDOVER_WECOM and not settings.get("servicer_userid"):
        found.append("servicer_userid: required when handover is wecom")
    return found


def _describe(inbox: Inbox, base_url: str) -> list[str]:
    return [
        f"The desk answers the WeChat customer-service account {inbox.settings['open_kfid']}",
        f"of the corp {inbox.settings['corp_id']} through {api_base(inbox.settings)}.",
        "In WeCom's admin (管理后台) › 应用管理 › 微信客服 › API › 接收消息服务器 (the receiving",
        "server): paste the URL below, the Token and the EncodingAESKey of these settings, and",
        "save: WeCom checks the URL at once, so the desk must already be reachable at it.",
        "Then give the account to the API (通过API管理微信客服账号), and add the public IP",
        "address the connectors process sends from to the app's trusted IPs (企业可信IP):",
        "WeCom refuses calls from any other address (errcode 60020). Start",
        "`manage.py run_connectors` (make run does).",
        f"{base_url}{callback_path(inbox.pk)}",
    ]


WECOM = Kind(
    name="wecom",
    required=("corp_id", "secret", "token", "encoding_aes_key", "open_kfid"),
    optional=("api_base", "handover", "servicer_userid"),
    secrets=("secret", "token", "encoding_aes_key"),
    check=_check,
    describe=_describe,
    send=send,
)
