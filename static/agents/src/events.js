// Console socket frames (docs/protocol.md, "Console socket"), and the hand-over while a
// conversation opens in the pane.

import { alertHandoff } from "./alerts.js";
import { $, currentId } from "./dom.js";
import { refresh } from "./partials.js";
import { send } from "./socket.js";
import { actionFrame, botFrame, showTyping, upsertMessage } from "./transcript.js";

let root = null;
// Opening a conversation in the pane: the socket watches it from the moment the request
// leaves, and its events wait here until the pane is on screen (none fall in between).
let opening = null;
let held = [];

export function setRoot(element) {
  root = element;
}

/** The pane is about to load conversation `id`: watch it now, hold its events. */
export function startOpening(id) {
  opening = id;
  held = [];
  send({ type: "watch", conversation_id: id });
}

/** The pane is on screen: the events held for it are handled now. */
export function finishOpening() {
  const replay = opening === currentId() ? held : [];
  opening = null;
  held = [];
  replay.forEach(handle);
}

/** Watch the conversation in the pane (or none). */
export function watchCurrent() {
  const id = currentId();
  send(id ? { type: "watch", conversation_id: id } : { type: "unwatch" });
}

export function handle(frame) {
  if (opening && frame.conversation_id === opening && opening !== currentId()) {
    held.push(frame);
    return;
  }
  const mine = frame.conversation_id && frame.conversation_id === currentId();
  switch (frame.type) {
    case "console.update":
      refresh("#inbox", 500);
      break;
    case "console.handoff":
      refresh("#inbox", 0);
      if (!mine) alertHandoff(root, frame); // the open conversation shows it already
      break;
    case "console.ticket": {
      refresh("#ticket-list");
      refresh("#conv-tickets");
      const page = $(".page--ticket");
      if (page && page.dataset.ticketId === String(frame.ticket_id)) {
        refresh("#ticket-props");
        refresh("#notes");
      }
      break;
    }
    case "conv.status":
      if (mine) refresh("#controls", 0);
      break;
    case "conv.message":
      if (mine) upsertMessage(frame);
      if (mine && frame.role === "customer") showTyping(null);
      break;
    case "conv.bot": {
      const inner = frame.frame || {};
      if (mine) (inner.type === "action" ? actionFrame : botFrame)(inner);
      break;
    }
    case "conv.typing":
      if (mine && frame.who === "customer") showTyping("Customer is typing…");
      else if (mine && frame.who === "agent" && frame.name && frame.name !== root.dataset.userName) {
        showTyping(frame.name + " is typing…");
      }
      break;
    case "error":
      console.warn("console socket:", frame.code, frame.message);
      break;
    default:
      break;
  }
}
