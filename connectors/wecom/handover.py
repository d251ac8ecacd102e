"""Hand-offs of an inbox whose `handover` is "wecom": the customer goes to one of the
company's servicers in WeCom's own client, instead of the desk's console.

The desk's hand-off (`handoff.requested`, in its transaction) leaves a pending row; the
connectors process then tells the customer and moves the session with service_state/trans
(the text first: once a servicer holds the session, the API may not send)."""

import logging

from django.utils import timezone

from chat.models import Conversation, Inbox
from connectors.wecom import account, selectors, services
from connectors.wecom.client import STATE_SERVICER, WeComClient, WeComError
from connectors.wecom.window import ReplyWindow
from runtime.aio import db

log = logging.getLogger("connectors")
TELL_CUSTOMER = {
    "zh": "正在为您转接人工客服，请稍候。",
    "en": "We are passing you to a member of our team; they will be with you shortly.",
}


def on_desk_event(sender, *, event: str, conversation_id, **_) -> None:
    """chat.hooks.desk_event's receiver: a hand-off in a WeCom inbox handing over to WeCom."""
    if event != "handoff.requested":
        return
    inbox = (
        Inbox.objects.filter(conversations__pk=conversation_id, enabled=True, kind=Inbox.Kind.WECOM)
        .only("pk", "settings")
        .first()
    )
    if inbox is not None and account.handover(inbox.settings) == account.HANDOVER_WECOM:
        services.handover_wanted(conversation_id=conversation_id)


async def carry_out(inbox: Inbox, client: WeComClient) -> None:
    """Every pending hand-off of the account; one that fails is tried at the next look."""
    servicer = inbox.settings.get("servicer_userid", "")
    for customer in await db(selectors.handovers_pending)(inbox_id=inbox.pk):
        conversation = await db(selectors.open_conversation)(
            inbox_id=inbox.pk, external_userid=customer.external_userid
        )
        window = ReplyWindow(
            last_customer_message_at=customer.last_customer_message_at,
            sent_since=customer.sent_since,
        )
        try:
            if window.verdict(now=timezone.now(), service_state=customer.service_state).allowed:
                await client.send_text(
                    open_kfid=inbox.settings["open_kfid"],
                    external_userid=customer.external_userid,
                    content=_tell(conversation),
                )
                await db(services.text_sent)(
                    inbox_id=inbox.pk, external_userid=customer.external_userid
                )
            await client.service_state_trans(
                open_kfid=inbox.settings["open_kfid"],
                external_userid=customer.external_userid,
                service_state=STATE_SERVICER,
                servicer_userid=servicer,
            )
        except WeComError as exc:
            log.warning("inbox %s: handing a customer to WeCom failed: %s", inbox.pk, exc)
            continue
        await db(services.handover_done)(
            inbox_id=inbox.pk,
            external_userid=customer.external_userid,
            servicer_userid=servicer,
            note=f"Passed to WeCom servicer {servicer}: they answer in WeCom's client.",
        )
    await db(services.handovers_checked)(inbox_id=inbox.pk)


def _tell(conversation: Conversation | None) -> str:
    language = conversation.language if conversation is not None else "zh"
    return TELL_CUSTOMER.get(language, TELL_CUSTOMER["zh"])
