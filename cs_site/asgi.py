"""ASGI entry point: HTTP through Django, WebSockets through Channels' router.

Run with `daphne cs_site.asgi:application` (what `make run` does).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
# Django must be set up before anything imports models, so this comes before the routing.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from agents.consumers import MAX_FRAME_CHARS as CONSOLE_FRAME_CHARS  # noqa: E402
from agents.routing import websocket_urlpatterns as console_websockets  # noqa: E402
from chat.routing import websocket_urlpatterns as chat_websockets  # noqa: E402
from cs_site.static_files import StaticFiles  # noqa: E402
from runtime import daphne_shutdown, wsframes  # noqa: E402
from runtime.startup_objects import freeze_startup_objects  # noqa: E402

# Daphne imports this module before it starts listening, so its WebSocket protocol can still be
# swapped here: a message over the sockets' frame limits is cut while it arrives (memory stays
# flat) and refused by the consumer as too large on a socket that stays open, instead of being
# gathered whole (up to 1 MiB) or, above that, the connection dropped. The bound is the larger
# limit in bytes (the console counts characters, up to 4 bytes each), so a cut message is
# over the limit of whichever socket receives it.
wsframes.install(
    max_message_bytes=max(settings.CHAT["MAX_FRAME_BYTES"], 4 * CONSOLE_FRAME_CHARS)
    + wsframes.MARGIN_BYTES
)

# SIGTERM cancels every socket, so the answers under way are saved before the process goes
# (runtime/daphne_shutdown.py: Daphne's own trigger skipped them all when a socket had just
# opened).
daphne_shutdown.install()

# /static/: collected files with cache headers (cs_site/static_files.py); with DEBUG, Django's
# handler serves the source folders as they are edited; SERVE_STATIC=false leaves it to a proxy.
if not settings.SERVE_STATIC:
    http_app = django_asgi_app
elif settings.DEBUG:
    http_app = ASGIStaticFilesHandler(django_asgi_app)
else:
    http_app = StaticFiles(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Each app's routes carry their own origin check and session auth (see routing.py).
        "websocket": URLRouter([*chat_websockets, *console_websockets]),
    }
)

# Last, with everything imported: start-up's objects out of every later full collection.
freeze_startup_objects()
