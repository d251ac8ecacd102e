"""One call of an action: `await call(action, arguments, customer_id=...)` → `Outcome`.

In order, each step able to refuse the call before anything is sent:
1. the action is enabled, and a `verified` one has the verified customer's id;
2. the arguments fit the action's JSON Schema (only declared parameters are kept);
3. the URL is rendered from its template (`url_template`: values encoded, host fixed and
   allowed by ACTIONS_ALLOWED_HOSTS);
4. `${NAME}` in the headers is read from the environment (`headers`);
then one HTTP request (httpx): GET carries the arguments only in the URL, other methods send
them as a JSON body too. The action's timeout bounds the whole call, connection to last byte.
Redirects are never followed, to any host: a 3xx is an error (reason `redirect`), since a
back end that moved should have its action's URL changed, not be chased. The answer is read up
to ACTIONS_MAX_RESPONSE_BYTES and must be JSON; the action's `result` renders from it.

No proxy from the environment, no .netrc: a call goes where its action says, with the
headers its action names, and nothing else. Each call is counted (chat.metrics:
cs_chat_action_calls_total, cs_chat_action_call_seconds) and logged as one line with the
action's name, the host, the outcome and the time: never the URL (it holds the arguments and
the customer's id), the headers or the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
from django.conf import settings

from chat import metrics
from chat.actions import headers, localized, results, schema, url_template
from chat.actions.models import MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS, Action
from chat.actions.outcome import (
    BAD_RESPONSE,
    ERROR,
    OK,
    REFUSED,
    TIMEOUT,
    Outcome,
    refused,
)

log = logging.getLogger(__name__)

USER_AGENT = "cs-desk-actions/1"


class _TooLarge(Exception):
    pass


async def call(
    action: Action, arguments: object, *, customer_id: str | None, language: str = "en"
) -> Outcome:
    """Call `action` with the model's (or a trigger's) `arguments` for this customer.

    `customer_id`: the verified customer's id, from the product's own verification, never
    from the model or the customer's words; None for a customer who is not verified.
    `language`: the conversation's, whose `result` template the text is rendered with."""
    outcome = await _call(action, arguments, customer_id=customer_id, language=language)
    sent = outcome.latency_ms is not None
    metrics.action_called(action.name, outcome.status, outcome.latency_ms / 1000 if sent else None)
    log.log(
        logging.INFO if outcome.status in (OK, REFUSED) else logging.WARNING,
        "Action %s to %s: %s%s%s%s",
        action.name,
        url_template.host_of(action.url),
        outcome.status,
        f" ({outcome.reason})" if outcome.reason else "",
        f" HTTP {outcome.http_status}" if outcome.http_status else "",
        f" in {outcome.latency_ms} ms" if sent else "",
    )
    return outcome


async def _call(
    action: Action, arguments: object, *, customer_id: str | None, language: str
) -> Outcome:
    if not action.enabled:
        return refused("disabled", "the action is turned off")
    if action.audience != Action.Audience.PUBLIC and not customer_id:
        return refused("not_verified", "only for verified customers, and this one is not")
    if not _usable(action):
        # Saved around the model's checks (the ORM, a database edit): refused, not a crash.
        return refused("misconfigured", "the action's definition does not pass its checks")
    kept, problems = schema.validated(action.parameters, arguments)
    if problems:
        return refused("invalid_arguments", "; ".join(problems))
    try:
        url = url_template.render(action.url, kept, customer_id=customer_id)
    except url_template.HostNotAllowed as exc:
        return refused("host_not_allowed", str(exc))
    except url_template.RenderError as exc:
        return refused("bad_url", str(exc))
    try:
        sent_headers = headers.resolve(action.headers)
    except headers.MissingVariable as exc:
        return refused(
            "missing_secret",
            f"environment variable {exc.name} is not set where the desk runs",
        )
    return await _send(
        action,
        url,
        {"Accept": "application/json", "User-Agent": USER_AGENT, **sent_headers},
        body=None if action.method == Action.Method.GET else kept,
        result=localized.template_for(action.result, language),
    )


def _usable(action: Action) -> bool:
    return (
        isinstance(action.parameters, dict)
        and isinstance(action.headers, dict)
        and all(isinstance(v, str) for v in action.headers.values())
        and isinstance(action.url, str)
        and isinstance(action.result or "", str | dict)
        and isinstance(action.timeout_seconds, int | float)
        and action.method in Action.Method.values
    )


async def _send(
    action: Action, url: str, sent_headers: dict, *, body: dict | None, result: str
) -> Outcome:
    limit = settings.ACTIONS["MAX_RESPONSE_BYTES"]
    # Within the bounds a save enforces, whatever the row holds.
    timeout = min(max(float(action.timeout_seconds), MIN_TIMEOUT_SECONDS), MAX_TIMEOUT_SECONDS)
    started = time.monotonic()

    def elapsed_ms() -> int:
        return round((time.monotonic() - started) * 1000)

    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream(
                action.method,
                url,
                headers=sent_headers,
                json=body,
            ) as response,
        ):
            status = response.status_code
            if not 200 <= status < 300:
                reason = "redirect" if 300 <= status < 400 else f"http_{status}"
                detail = (
                    "the back end redirected; redirects are never followed"
                    if reason == "redirect"
                    else f"the back end answered HTTP {status}"
                )
                return Outcome(
                    status=ERROR,
                    reason=reason,
                    detail=detail,
                    http_status=status,
                    latency_ms=elapsed_ms(),
                )
            content = await _read(response, limit)
    except _TooLarge:
        return Outcome(
            status=BAD_RESPONSE,
            reason="too_large",
            detail=f"the answer is larger than {limit} bytes (ACTIONS_MAX_RESPONSE_BYTES)",
            http_status=status,
            latency_ms=elapsed_ms(),
        )
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(
            status=TIMEOUT,
            reason="timeout",
            detail=f"no whole answer within {timeout:g} s",
            latency_ms=elapsed_ms(),
        )
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        # The exception's text may hold the URL: only its kind is kept.
        return Outcome(
            status=ERROR,
            reason="unreachable",
            detail=f"the back end could not be reached ({type(exc).__name__})",
            latency_ms=elapsed_ms(),
        )
    return _result(result, content, http_status=status, latency_ms=elapsed_ms())


async def _read(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content += chunk
        if len(content) > limit:
            raise _TooLarge
    return bytes(content)


def _result(template: str, content: bytes, *, http_status: int, latency_ms: int) -> Outcome:
    """The outcome of an answer that came, its text rendered with `template` (the action's
    `result` in the conversation's language)."""

    def bad(reason: str, detail: str) -> Outcome:
        return Outcome(
            status=BAD_RESPONSE,
            reason=reason,
            detail=detail,
            http_status=http_status,
            latency_ms=latency_ms,
        )

    if not content.strip() and not template:
        # Nothing to show and nothing sent back (204): done.
        return Outcome(status=OK, http_status=http_status, latency_ms=latency_ms)
    try:
        data = json.loads(content)
    except ValueError:  # not UTF-8 or not JSON
        return bad("not_json", "the answer is not JSON")
    try:
        fields, text = results.render(template, data)
    except results.BadResponse as exc:
        return bad("missing_field", str(exc))
    return Outcome(
        status=OK, http_status=http_status, latency_ms=latency_ms, fields=fields, text=text
    )
