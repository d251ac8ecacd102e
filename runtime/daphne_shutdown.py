"""Daphne's stop on SIGTERM, made to reach every connection.

On SIGTERM Daphne cancels every connection's application and waits for them to end (its
`Server.kill_all_applications`, a Twisted "before shutdown" trigger); the customer sockets,
cancelled, save what the answers of the process streamed so far (`chat.answering.persist_all`),
so a restart loses nothing. Daphne 4.2 reads each listed connection's "application_instance"
there, but a connection can be listed without one: the HTTP request a WebSocket was upgraded
from stays listed, without an application, until Daphne's application checker drops it up to
a second later, and so does a request whose body is still arriving. SIGTERM within that
second raised KeyError in the trigger: no application was cancelled and every answer under
way was lost. A busy site opens a socket every second.

`install()` replaces the trigger with one that passes over connections without an application
and otherwise does what Daphne's does.
"""

import asyncio
import logging
import sys

# Daphne's own logger: the line reads as it always has.
log = logging.getLogger("daphne.server")


def kill_all_applications(server):
    """Cancel every connection's running application; a Deferred that fires when all ended."""
    from twisted.internet import defer

    running = [
        instance
        for details in list(server.connections.values())
        if (instance := details.get("application_instance")) is not None and not instance.done()
    ]
    for instance in running:
        instance.cancel()
    log.info("Killed %i pending application instances", len(running))
    ended = defer.Deferred.fromFuture(asyncio.gather(*running))
    ended.addErrback(lambda _failure: None)  # cancelled applications end in CancelledError
    return ended


def install() -> None:
    """Under Daphne (its server module is loaded: the daphne command imports it before the
    application, and the trigger is bound when the server starts, after that), use the
    trigger above. Elsewhere (tests, other servers) nothing is imported or changed."""
    daphne_server = sys.modules.get("daphne.server")
    if daphne_server is not None:
        daphne_server.Server.kill_all_applications = kill_all_applications
