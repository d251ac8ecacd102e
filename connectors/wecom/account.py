"""A WeCom inbox's settings put to use: its API client and its callback crypto, built from
the settings with their `${NAME}` secrets read from the environment. Never log what these
return: they hold the secrets."""

import asyncio
import weakref

from chat.models import Inbox
from connectors import kinds
from connectors.wecom.client import DEFAULT_BASE_URL, WeComClient
from connectors.wecom.crypto import WeComCrypto

HANDOVER_DESK = "desk"  # a hand-off is answered in the desk's console, as on any channel
HANDOVER_WECOM = "wecom"  # a hand-off passes the customer to a servicer in WeCom's client
HANDOVERS = (HANDOVER_DESK, HANDOVER_WECOM)
# The click item of the "talk to a person" menu; it comes back as a text with this menu_id.
HUMAN_MENU_ID = "desk_human"

# One client per account and event loop: it caches the access token (WeCom limits how often
# one may be fetched) and its connections belong to the loop that made them.
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()


def callback_path(inbox_id: int) -> str:
    return f"/connectors/wecom/{inbox_id}/callback"


def api_base(settings: dict) -> str:
    return (settings.get("api_base") or DEFAULT_BASE_URL).rstrip("/")


def handover(settings: dict) -> str:
    return settings.get("handover") or HANDOVER_DESK


def crypto_for(inbox: Inbox) -> WeComCrypto:
    """Raises env_secrets.MissingVariable, or WeComCryptoError for a malformed key."""
    values = kinds.resolved(inbox)
    return WeComCrypto(
        token=values["token"],
        encoding_aes_key=values["encoding_aes_key"],
        receive_id=values["corp_id"],
    )


def client_for(inbox: Inbox, *, timeout: float) -> WeComClient:
    """The account's client in the running event loop; raises env_secrets.MissingVariable."""
    values = kinds.resolved(inbox)
    key = (values["corp_id"], values["secret"], api_base(values), timeout)
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(key)
    if client is None:
        client = clients[key] = WeComClient(
            corp_id=values["corp_id"],
            corp_secret=values["secret"],
            base_url=api_base(values),
            timeout=timeout,
        )
    return client


async def close_clients() -> None:
    """Close the running loop's clients (the connectors process stopping)."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()
