"""Incoming WebSocket messages, bounded while they arrive instead of after.

Daphne serves WebSockets with autobahn, which gathers a whole message in memory before the
application sees it, and fails the connection when a message exceeds Daphne's 1 MiB default
(the client sees an abnormal close, 1006, not the documented `frame_too_large`). A larger
limit alone would let every socket make Daphne hold that much per message.

`install()` gives Daphne a WebSocket protocol that keeps at most `max_message_bytes` of any
message and drops the rest as it arrives, so memory stays flat whatever a client sends. A
message that was cut short reaches the application as its first `max_message_bytes` bytes
(an incomplete character at the cut dropped): text longer than the application's own limit,
which the application refuses with its usual error (`frame_too_large` on /ws/chat/,
`bad_frame` on /ws/console/) on a socket that stays open. Both consumers check the size
before they parse anything, so the stand-in is never taken for the client's frame.

Beyond that, autobahn's own ceiling (`HARD_CEILING_BYTES`, one frame or one message) still
fails the connection, at the frame's header, before any of its payload is read: autobahn
sends a close frame with code 1009 (message too big) and its reason, reads and discards what
the client still sends until the client answers the close or one second passes, then closes
the TCP connection. With autobahn's default (drop without a close frame) such a client would
only see 1006 and not know why.

The ceiling also bounds what the server sends: one outgoing frame (a long history) may be up
to HARD_CEILING_BYTES instead of Daphne's 1 MiB.
"""

import logging

from daphne import ws_protocol
from twisted.internet import tcp
from twisted.internet.protocol import connectionDone
from twisted.web import http

log = logging.getLogger(__name__)

# Bytes kept beyond the application's limit, so that a cut message is still longer than the
# limit once an incomplete UTF-8 character (at most 3 bytes) is dropped at the cut.
MARGIN_BYTES = 4
# Larger than any frame a well-behaved client sends, far below what would hurt: frames and
# messages over this are refused by autobahn at their header, and the connection closed.
HARD_CEILING_BYTES = 8 * 1024 * 1024


class BoundedWebSocketProtocol(ws_protocol.WebSocketProtocol):
    """Daphne's protocol, keeping at most `max_message_bytes` of each incoming message."""

    max_message_bytes = 16384 + MARGIN_BYTES  # set by install()
    # Class attributes win over the factory's options: autobahn copies an option from the
    # factory only when the protocol has no value of its own. So Daphne's
    # --websocket_max_frame_size / --websocket_max_message_size do not apply.
    maxFramePayloadSize = HARD_CEILING_BYTES
    maxMessagePayloadSize = HARD_CEILING_BYTES
    # Fail a connection with a close frame that says why (1009 too big, 1007 not UTF-8, 1002
    # protocol error) rather than by dropping it, which a client can only read as 1006.
    failByDrop = False

    kept_bytes = 0
    truncated = False
    _upgraded_from: http.HTTPChannel | None = None

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self.kept_bytes = 0
        self.truncated = False

    def onMessageFrameData(self, payload: bytes) -> None:
        # autobahn calls this with each chunk read from the network (a frame is not gathered
        # first), after its incremental UTF-8 check of the whole chunk.
        room = self.max_message_bytes - self.kept_bytes
        if len(payload) > room:
            self.truncated = True
            payload = payload[: max(room, 0)]
            if not payload:
                return
        self.kept_bytes += len(payload)
        super().onMessageFrameData(payload)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Write a frame to the socket now, when nothing is queued before it.

        autobahn hands every frame to Twisted's transport.write, which only buffers it and
        registers the socket for writing (an epoll_ctl), writes it at the reactor's next turn
        (a callback through Twisted's log context) and unregisters it (another epoll_ctl); it
        also formats a debug log line's arguments for every frame, logging on or not. For one
        small frame per socket per turn (every streamed delta) that machinery cost more than
        the send itself. Here the frame goes out with one send(); only what the socket does not
        take (a slow reader) goes through the transport's buffer, in order."""
        transport = self.transport
        if (
            sync
            or chopsize
            or self.send_queue
            or self.logOctets
            or self.state != self.STATE_OPEN
            or not _writable_now(transport)
        ):
            super().sendData(data, sync, chopsize)
            return
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # Twisted's own write meets the error again and closes the connection
        if sent < len(data):
            transport.write(data[sent:] if sent else data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)

    def connectionMade(self) -> None:
        # Daphne upgrades an HTTP request to this protocol and leaves the HTTP channel as the
        # transport's producer: kept to untie it when the connection ends.
        producer = getattr(self.transport, "producer", None)
        self._upgraded_from = producer if isinstance(producer, http.HTTPChannel) else None
        super().connectionMade()

    def connectionLost(self, reason=connectionDone) -> None:
        super().connectionLost(reason)
        # Break the reference cycles a closed connection leaves, so it is freed at once rather
        # than by the next full garbage collection, which then takes the longer the more
        # sockets closed since, and stalls every stream of the process meanwhile (measured:
        # about 40 tracked objects a socket). autobahn resolves `is_closed` with the protocol
        # itself, and Daphne's HTTP channel and its upgraded request point at each other. Both
        # futures are done by now: autobahn touches them only before the state is CLOSED.
        self.is_closed = self.is_open = None
        channel, self._upgraded_from = self._upgraded_from, None
        if channel is not None:
            channel.requests.clear()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.truncated and not isBinary:
            # The cut may split a character; Daphne decodes text strictly.
            payload = payload.decode("utf-8", "ignore").encode("utf-8")
        super().onMessage(payload, isBinary)


def _writable_now(transport) -> bool:
    """A plain TCP connection, open, with nothing buffered: a direct send keeps the order."""
    return (
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    )


def install(*, max_message_bytes: int) -> None:
    """Make Daphne's WebSocket factory use BoundedWebSocketProtocol, keeping at most
    `max_message_bytes` of a message (the application's largest limit plus MARGIN_BYTES).
    Calling it again only changes the limit."""
    BoundedWebSocketProtocol.max_message_bytes = max_message_bytes
    if ws_protocol.WebSocketFactory.protocol is not BoundedWebSocketProtocol:
        ws_protocol.WebSocketFactory.protocol = BoundedWebSocketProtocol
        log.debug("WebSocket messages are kept up to %d bytes", max_message_bytes)
