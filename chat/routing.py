from channels.auth import AuthMiddlewareStack
from django.urls import path

from chat.consumers import ChatConsumer
from chat.security import SiteKeyOrHostOriginValidator

# Browsers always send Origin on WebSockets: a page on a host we do not serve, or that no
# site key allows, cannot open a socket here with the visitor's cookies.
websocket_urlpatterns = [
    path("ws/chat/", SiteKeyOrHostOriginValidator(AuthMiddlewareStack(ChatConsumer.as_asgi()))),
]
