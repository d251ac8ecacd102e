"""ASGI entry point: HTTP through Django, WebSockets through Channels' router.

Run with `daphne cs_site.asgi:application` (what `make run` does).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
# Django must be set up before anything imports models, so this comes before the routing.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from chat.routing import websocket_urlpatterns as chat_websockets  # noqa: E402
from chat.security import SiteKeyOrHostOriginValidator  # noqa: E402

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Browsers always send Origin on WebSockets: a page on a host we do not serve, or
        # that no site key allows, cannot open a socket here with the visitor's cookies.
        "websocket": SiteKeyOrHostOriginValidator(
            AuthMiddlewareStack(URLRouter(chat_websockets))
        ),
    }
)
