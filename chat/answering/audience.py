"""Who shows an answer: the sockets in a run's audience, and how a frame reaches one.

Two kinds of socket show an answer: a customer's (the widget's socket, or an API request that
listens like one, chat.api.listening) and a console's watching the conversation (agents'). Each
is registered here while it shows a conversation, so the run of this process calls its method
directly, without Redis; a socket of another process gets the same event through the channel
layer, where Channels calls the method of the event's name ("answer.frame" → `answer_frame`).
Either way the browser gets the same frame.
"""

from typing import Protocol, cast

from chat import group_events

CUSTOMER, CONSOLE = "customer", "console"


class Audience(Protocol):
    """What every socket that shows answers has (chat.consumers.ChatConsumer,
    chat.api.listening.AnswerListener, agents.consumers.ConsoleConsumer)."""

    channel_name: str

    async def answer_started(self, event: dict) -> None:
        """Group event answer.started: an answer began in the conversation, maybe in another
        process; the socket joins its audience (chat.answering.join)."""


class CustomerAudience(Audience, Protocol):
    async def answer_frame(self, event: dict) -> None:
        """group_events.answer_frame: pass event["frame"] (bot.start, bot.delta, bot.done) on
        to the customer as it is."""


class ConsoleAudience(Audience, Protocol):
    async def conv_bot(self, event: dict) -> None:
        """group_events.conv_bot: show the agent the bot's frame, in the conversation that
        event["conversation_id"] names."""


# Sockets of this process by channel name, so a run reaches them without Redis.
_sockets: dict[str, CustomerAudience | ConsoleAudience] = {}


def register_socket(channel_name: str, consumer: CustomerAudience | ConsoleAudience) -> None:
    """A socket of this process that can be in an audience, called directly instead of
    through Redis."""
    _sockets[channel_name] = consumer


def unregister_socket(channel_name: str) -> None:
    _sockets.pop(channel_name, None)


async def deliver(layer, channel: str, kind: str, conversation_id: str, frame: dict) -> None:
    """`frame` to one socket of an answer's audience, of kind CUSTOMER or CONSOLE. Raises what
    the socket or the channel layer raises (ChannelFull: a socket that is not reading)."""
    consumer = _sockets.get(channel)
    if kind == CUSTOMER:
        event = group_events.answer_frame(frame=frame)
        if consumer is not None:
            await cast(CustomerAudience, consumer).answer_frame(event)
            return
    else:
        event = group_events.conv_bot(conversation_id=conversation_id, frame=frame)
        if consumer is not None:
            await cast(ConsoleAudience, consumer).conv_bot(event)
            return
    await layer.send(channel, event)
