from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from agents.consumers import ConsoleConsumer

# Staff sockets: only pages on the desk's own hosts, with the staff member's session.
websocket_urlpatterns = [
    path(
        "ws/console/", AllowedHostsOriginValidator(AuthMiddlewareStack(ConsoleConsumer.as_asgi()))
    ),
]
