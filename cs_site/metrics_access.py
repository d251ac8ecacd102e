"""Who may read /metrics: django_prometheus's page, behind a check.

The page tells request rates per view, answer outcomes, queue waits and open sockets: nothing
for the public, and scraping it costs the process a little. Three ways in, checked cheapest
first; anyone else gets 403 with one short line:

- a client address in settings.METRICS_ALLOWED_NETWORKS (loopback by default: `make run`,
  bench/, the tests and a Prometheus on the same machine read it that way). The address is the
  one runtime/client_ip.py tells, so behind a proxy listed in TRUSTED_PROXIES it is the
  customer's, not the proxy's;
- `Authorization: Bearer <settings.METRICS_BEARER_TOKEN>`: Prometheus on another machine
  (deploy/prometheus.yml);
- an active staff user logged in, for a look from the browser.

A request that carries X-Forwarded-For (or Forwarded) which no trusted proxy vouched for came
through a proxy the desk does not know about, or forged the header: its peer address says
nothing about who sent it, so no network lets it in. Without this, a reverse proxy on the same
machine with TRUSTED_PROXIES unset would pass every visitor in as loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django_prometheus.exports import ExportToDjangoView

from runtime.client_ip import IPNetwork, client_ip, parse_ip

REFUSAL = (
    "Forbidden: metrics are for the desk's monitoring (a bearer token, an allowed "
    "network, or a staff login).\n"
)


def metrics(request: HttpRequest) -> HttpResponse:
    if not may_read(request):
        return HttpResponseForbidden(REFUSAL, content_type="text/plain; charset=utf-8")
    return ExportToDjangoView(request)


def may_read(request: HttpRequest) -> bool:
    return _from_allowed_network(request) or _has_token(request) or _is_staff(request)


def _from_allowed_network(request: HttpRequest) -> bool:
    networks = _networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    if not networks:
        return False
    peer = request.META.get("REMOTE_ADDR") or None
    scope = getattr(request, "scope", None)  # ASGIRequest: the peer as Daphne saw it
    address = parse_ip(
        client_ip(scope) if scope is not None else client_ip(request.headers, peer=peer)
    )
    if address is None:
        return False
    forwarded = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
    if forwarded and address == parse_ip(peer or ""):
        return False  # forwarded, but by no proxy we trust: see the module's docstring
    return any(address.version == net.version and address in net for net in networks)


def _has_token(request: HttpRequest) -> bool:
    expected = settings.METRICS_BEARER_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _is_staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """METRICS_ALLOWED_NETWORKS parsed once per value. A typo stops the request with the entry
    named rather than silently letting nobody, or everybody, in."""
    networks = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"METRICS_ALLOWED_NETWORKS: {entry!r} is not an IP address or network "
                "(e.g. 127.0.0.1, 10.0.0.0/8, ::1)."
            ) from exc
    return tuple(networks)
