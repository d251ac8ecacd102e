"""Who may open a customer socket.

Pages on this desk's own hosts (the demo page) pass Channels' AllowedHostsOriginValidator.
Widget sockets carry a site key (`?site=KEY`) and come from company pages on other origins:
they are let through here and the consumer checks the origin against that site's allowed
origins, so it can tell the page why it was refused.
"""

from urllib.parse import parse_qs

from channels.security.websocket import AllowedHostsOriginValidator


class SiteKeyOrHostOriginValidator:
    def __init__(self, application):
        self.application = application
        self.same_host_only = AllowedHostsOriginValidator(application)

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("site", [""])[0]:
            return await self.application(scope, receive, send)
        return await self.same_host_only(scope, receive, send)
