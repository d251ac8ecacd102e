// A pane's transcript: questions and answers as text, never as HTML.

import { addLine, el } from "./dom.js";
import { transcript } from "./page.js";

const WHO = { customer: "Customer (you)", bot: "Bot" };

/** li.pg-msg.pg-msg--ROLE > .pg-msg__who, .pg-msg__text, appended to the pane's list. */
export function addMessage(pane, role, text) {
  const item = el("li", "pg-msg pg-msg--" + role);
  addLine(item, "pg-msg__who", WHO[role]);
  addLine(item, "pg-msg__text", text);
  transcript(pane).append(item);
  scrollToEnd(pane);
  return item;
}

export function scrollToEnd(pane) {
  const list = transcript(pane);
  list.scrollTop = list.scrollHeight;
}
