"""The callback URL WeCom calls (/connectors/wecom/<inbox id>/callback): no login, no CSRF
token, the signature is the proof. GET checks the URL when it is saved in WeCom's admin; POST
says there is news, and only stores a sync request for the connectors process: WeCom waits 5
seconds for the answer and calls again after that, so nothing slow happens here."""

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from chat.env_secrets import MissingVariable
from connectors.wecom import account, callback, selectors, services
from connectors.wecom.crypto import WeComCryptoError

log = logging.getLogger("connectors")


@csrf_exempt
@require_http_methods(["GET", "POST"])
def wecom_callback(request: HttpRequest, inbox_id: int) -> HttpResponse:
    inbox = selectors.enabled_inbox(inbox_id)
    if inbox is None:
        return HttpResponseNotFound("no such channel")
    try:
        crypto = account.crypto_for(inbox)
    except (MissingVariable, WeComCryptoError, KeyError) as exc:
        # The settings, not the caller: WeCom tries again, and staff read the log.
        log.error("WeCom inbox %s cannot check callbacks: %s", inbox.pk, type(exc).__name__)
        return HttpResponse("the channel is not configured", status=503)
    query = {name: request.GET.get(name, "") for name in ("msg_signature", "timestamp", "nonce")}
    try:
        if request.method == "GET":
            verified = callback.verify_url(crypto, echostr=request.GET.get("echostr", ""), **query)
            return HttpResponse(verified.echostr, content_type="text/plain; charset=utf-8")
        length = int(request.headers.get("Content-Length") or 0)
        if length > callback.MAX_BODY_BYTES:
            raise callback.CallbackRejected("the body is too large")
        event = callback.parse_callback(
            crypto, body=request.read(callback.MAX_BODY_BYTES + 1), **query
        )
    except callback.CallbackRejected as exc:
        log.warning("WeCom inbox %s: callback refused: %s", inbox.pk, exc.reason)
        return HttpResponseBadRequest("refused")
    except ValueError:
        log.warning("WeCom inbox %s: callback refused: a bad Content-Length", inbox.pk)
        return HttpResponseBadRequest("refused")
    if isinstance(event, callback.KfMsgOrEvent):
        if event.open_kfid and event.open_kfid != inbox.settings.get("open_kfid"):
            # Another account of the corp shares this URL: its own inbox reads it.
            log.info("WeCom inbox %s: news for another account, ignored", inbox.pk)
        else:
            services.sync_requested(inbox_id=inbox.pk, token=event.token)
    return HttpResponse("success", content_type="text/plain")
