"""Channel-layer events between the desk's sockets: the conversation, watcher and console groups,
and the audience of an answer (documented in docs/protocol.md, "Channel layer: conversation and
console groups" and "Channel layer: answers").

Who sends and who receives:
- group `conversation.<id>`: the customer sockets of one conversation (chat.consumers, and the
  chat API's event stream) hear status changes, agent replies and agent typing;
- group `watch.<id>`: the console sockets showing that conversation (agents.consumers, staff
  only) hear every stored message, both sides' typing and the bot's frames;
- group `console`: every console socket hears inbox changes, hand-off alerts and tickets;
- `answer.*`: between the run that streams an answer (chat.answering) and the sockets that
  show it, in any process.

chat's services (and agents' staff services) produce the group events after their transaction
commits (runtime.broadcast.after_commit); agents may import this module, chat never imports
agents. Channels routes an event to the handler named after its type: "conv.status" is handled
by the consumer method `conv_status`.
"""

from chat.frames import (
    agent_joined_frame,
    agent_left_frame,
    agent_message_frame,
    agent_typing_frame,
    conversation_closed_frame,
)

# --- Conversation, watcher and console groups ---------------------------------------------------


def conversation_group(conversation_id) -> str:
    return f"conversation.{conversation_id}"


def watch_group(conversation_id) -> str:
    return f"watch.{conversation_id}"


CONSOLE_GROUP = "console"


def conv_status(*, conversation_id: str, status: str, agent_name: str = "") -> dict:
    """The conversation's mode changed: bot, waiting, human (agent_name holds it), closed."""
    return {
        "type": "conv.status",
        "conversation_id": conversation_id,
        "status": status,
        "agent_name": agent_name,
    }


def conv_message(
    *, conversation_id: str, message_id: int, role: str, text: str, author_name: str = ""
) -> dict:
    """A stored message: agent replies reach the customer; watchers see every role."""
    return {
        "type": "conv.message",
        "conversation_id": conversation_id,
        "id": message_id,
        "role": role,
        "text": text,
        "author_name": author_name,
    }


def conv_typing(*, conversation_id: str, who: str, name: str = "") -> dict:
    return {"type": "conv.typing", "conversation_id": conversation_id, "who": who, "name": name}


def conv_bot(*, conversation_id: str, frame: dict) -> dict:
    """A bot.start / bot.delta / bot.done frame, mirrored to watchers as the customer sees it."""
    return {"type": "conv.bot", "conversation_id": conversation_id, "frame": frame}


def conv_action(*, conversation_id: str, frame: dict) -> dict:
    """An `action` frame (a call of the company's back end changed status after the customer
    confirmed or cancelled it) for the conversation's customer sockets and API listeners."""
    return {"type": "conv.action", "conversation_id": conversation_id, "frame": frame}


def console_update(*, conversation_id: str, reason: str) -> dict:
    """Something in the inbox changed for this conversation (new, message, a status, or
    customer: a verified customer was named)."""
    return {"type": "console.update", "conversation_id": conversation_id, "reason": reason}


def console_handoff(*, conversation_id: str, subject: str) -> dict:
    """A customer asked for a human: alert every online agent."""
    return {"type": "console.handoff", "conversation_id": conversation_id, "subject": subject}


def console_ticket(*, ticket_id: int, reason: str) -> dict:
    return {"type": "console.ticket", "ticket_id": ticket_id, "reason": reason}


def customer_frame_for(event: dict) -> dict | None:
    """What the customer is told of a conversation-group event (on the socket, or on the
    API's event stream), or None: agents' news for the customer, nothing of the console's."""
    kind = event["type"]
    if kind == "conv.status":
        return {
            "human": lambda: agent_joined_frame(agent_name=event["agent_name"]),
            "bot": agent_left_frame,
            "closed": conversation_closed_frame,
        }.get(event["status"], lambda: None)()
    if kind == "conv.message" and event["role"] == "agent":
        return agent_message_frame(
            message_id=event["id"], text=event["text"], agent_name=event["author_name"]
        )
    if kind == "conv.action":
        return event["frame"]
    if kind == "conv.typing" and event["who"] == "agent":
        return agent_typing_frame(agent_name=event["name"])
    return None


# --- An answer and the sockets that show it (chat.answering) ------------------------------------


def answer_started(*, conversation_id: str, channel: str) -> dict:
    """To the conversation's and its watchers' groups: an answer began; `channel` is the run
    that streams it. Sockets that did not ask for it join its audience."""
    return {"type": "answer.started", "conversation_id": conversation_id, "channel": channel}


def answer_join(*, channel: str, kind: str, message_id: int | None = None) -> dict:
    """To a run: add this socket ("customer" or "console") to the audience; it gets the text
    so far at once. `message_id`: the answer this socket left out of its history because it
    was streaming; should it have ended meanwhile, the socket gets it whole."""
    return {"type": "answer.join", "channel": channel, "kind": kind, "message_id": message_id}


def answer_leave(*, channel: str, now: bool = False) -> dict:
    """To a run: this socket is gone. `now`: and it will not come back (an HTTP client that
    disconnected): with no customer left, the answer stops without the reload grace period."""
    return {"type": "answer.leave", "channel": channel, "now": now}


def answer_frame(*, frame: dict) -> dict:
    """A bot.start / bot.delta / bot.done frame for a customer socket of another process."""
    return {"type": "answer.frame", "frame": frame}
