// The open conversation's transcript: messages as the socket reports them, the bot's answer
// as it streams (conv.bot carries the customer's own bot.* and action frames), the calls the
// bot made to the company's back end, and "… is typing".
// Text only ever enters the page through textContent / text nodes, never as HTML.

import { $, clock, el } from "./dom.js";

const TYPING_SHOW_MS = 4000; // how long "Customer is typing…" stays without a new signal
const ROLES = new Set(["customer", "bot", "agent", "system"]);
const STICK_WITHIN_PX = 80;

let typingTimer = null;

const nearBottom = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < STICK_WITHIN_PX;

export function scrollToEnd(list) {
  list.scrollTop = list.scrollHeight;
}

/** Runs a change to the transcript, keeping an agent who was at the end there. */
function keepAtBottom(list, change) {
  const pinned = nearBottom(list);
  change();
  if (pinned) scrollToEnd(list);
}

/** A message as the server's template draws it: li.msg.msg--ROLE[data-id] > .msg__who, .msg__text */
function bubble(id, role, who) {
  const li = el("li", "msg msg--" + role);
  li.dataset.id = String(id);
  const time = el("time", "", clock(new Date()));
  time.dateTime = new Date().toISOString();
  const text = el("div", "msg__text");
  if (role === "system") {
    li.append(text, " ", time);
  } else {
    const head = el("div", "msg__who");
    head.append(who, " ", time);
    li.append(head, text);
  }
  return li;
}

export function findMessage(list, id) {
  return list.querySelector('li[data-id="' + CSS.escape(String(id)) + '"]');
}

function append(list, li) {
  keepAtBottom(list, () => {
    const empty = $(".transcript__empty", list);
    if (empty) empty.remove();
    list.append(li);
  });
}

/** conv.message: a stored message, new or the final text of one that streamed. */
export function upsertMessage(frame) {
  const list = $("#transcript");
  if (!list || !ROLES.has(frame.role)) return;
  let li = findMessage(list, frame.id);
  if (!li) {
    const who = { customer: "Customer", bot: "Bot", agent: frame.author_name || "Agent" }[frame.role];
    li = bubble(frame.id, frame.role, who || "");
    append(list, li);
  }
  // A stored message is final: its text replaces whatever streamed (or was missed).
  if (typeof frame.text === "string" && (frame.text || frame.role !== "bot")) {
    keepAtBottom(list, () => {
      $(".msg__text", li).textContent = frame.text;
      li.classList.remove("msg--streaming");
      li.dataset.final = "1";
    });
  }
}

/** An http(s) URL as the browser reads it, else null. */
function webHref(text) {
  try {
    const url = new URL(String(text));
    return /^https?:$/.test(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * bot.done `sources` (docs/protocol.md): the help articles the answer drew on, as links under
 * it: title as text, the URL as the link only if it is http(s).
 */
function sourcesLine(sources) {
  const valid = (Array.isArray(sources) ? sources : [])
    .filter((source) => source && typeof source === "object" && (source.title || source.url));
  if (!valid.length) return null;
  const line = el("div", "msg__meta msg__sources", "Sources:");
  for (const source of valid) {
    const title = String(source.title || source.url);
    const href = webHref(source.url);
    if (href) {
      const link = el("a", "", title);
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      line.append(" ", link);
    } else {
      line.append(" ", el("span", "", title));
    }
  }
  return line;
}

/** conv.bot: one of the customer's bot.start / bot.delta / bot.done frames. */
export function botFrame(frame) {
  const list = $("#transcript");
  if (!list || frame.message_id === undefined) return;
  let li = findMessage(list, frame.message_id);
  if (!li) {
    li = bubble(frame.message_id, "bot", "Bot");
    append(list, li);
  }
  if (li.dataset.final === "1") return; // already complete on screen
  keepAtBottom(list, () => {
    if (frame.type === "bot.start") {
      li.classList.add("msg--streaming");
      // A guard changed the answer shown so far: the deltas that follow are all of it.
      if (frame.replace) $(".msg__text", li).textContent = "";
      showTyping(null);
    } else if (frame.type === "bot.delta") {
      li.classList.add("msg--streaming");
      $(".msg__text", li).append(document.createTextNode(String(frame.text ?? "")));
    } else if (frame.type === "bot.done") {
      li.classList.remove("msg--streaming");
      li.dataset.final = "1";
      const notes = [];
      if (frame.fallback) notes.push("fallback rules");
      if (frame.partial) notes.push("cut off (" + frame.finish_reason + ")");
      for (const guard of Array.isArray(frame.guards) ? frame.guards : []) {
        notes.push("guard: " + String(guard).replace("_", " "));
      }
      if (notes.length && !$(".msg__meta", li)) {
        const meta = el("div", "msg__meta");
        for (const note of notes) meta.append(el("span", "tag", note));
        li.append(meta);
      }
      const sources = !$(".msg__sources", li) && sourcesLine(frame.sources);
      if (sources) li.append(sources);
    }
  });
}

// An action call's status as staff read it; the server's template says the same
// (agents/templatetags/action_calls.py).
const CALL_STATUS = {
  confirm_required: "waiting for the customer to confirm",
  confirmed: "confirmed by the customer, calling",
  cancelled: "cancelled by the customer",
  ok: "ok",
  error: "error",
  timeout: "timed out",
  bad_response: "bad response",
  refused: "refused, not called",
};
const CALL_FAILED = new Set(["error", "timeout", "bad_response", "refused", "cancelled"]);
const CALL_SENT = new Set(["ok", "error", "timeout", "bad_response"]); // these have a latency

/** `name(key=value, …)`: strings as they are, other values as JSON. */
function callSignature(name, args) {
  const entries = args && typeof args === "object" && !Array.isArray(args) ? Object.entries(args) : [];
  const shown = entries.map(([key, value]) => key + "=" + (typeof value === "string" ? value : JSON.stringify(value)));
  return String(name ?? "") + "(" + shown.join(", ") + ")";
}

const plain = (value) => (value == null || typeof value === "object" ? "" : String(value));

/**
 * conv.bot carrying an `action` frame: a call the bot made to the company's back end, before
 * the answer that tells of it. One line per call_id, drawn again in place as the call moves on
 * (confirm_required → confirmed → ok…). The markup is the server's (agents/_action_call.html):
 * li.call.call--STATUS[data-call-id] > .call__head (.call__name, .call__status, .call__latency),
 * .call__confirm, .call__text, .call__detail.
 */
export function actionFrame(frame) {
  const list = $("#transcript");
  if (!list || frame.call_id == null) return;
  const id = String(frame.call_id);
  let li = list.querySelector('li[data-call-id="' + CSS.escape(id) + '"]');
  if (!li) {
    li = el("li");
    li.dataset.callId = id;
    append(list, li);
  }
  const status = plain(frame.status);
  keepAtBottom(list, () => {
    li.className = "call call--" + (CALL_FAILED.has(status) ? "failed" : status === "ok" ? "ok" : "pending");
    li.dataset.status = status;
    const head = el("div", "call__head");
    head.append(el("span", "call__name mono", callSignature(frame.name, frame.arguments)), " ",
      el("span", "tag call__status", CALL_STATUS[status] || status));
    if (plain(frame.reason)) head.append(" ", el("span", "tag call__reason", plain(frame.reason)));
    if (CALL_SENT.has(status) && typeof frame.latency_ms === "number") head.append(" ", el("span", "call__latency", frame.latency_ms + " ms"));
    li.replaceChildren(head);
    if (plain(frame.confirm_text)) li.append(el("div", "call__confirm", "Asked the customer: " + plain(frame.confirm_text)));
    if (plain(frame.text)) li.append(el("div", "call__text", plain(frame.text)));
    if (plain(frame.detail)) li.append(el("div", "call__detail", plain(frame.detail)));
  });
}

/** "Customer is typing…" (or an agent's name); null hides it. */
export function showTyping(text) {
  const line = $("#typing");
  if (!line) return;
  clearTimeout(typingTimer);
  if (!text) {
    line.hidden = true;
    return;
  }
  line.textContent = text;
  line.hidden = false;
  typingTimer = setTimeout(() => (line.hidden = true), TYPING_SHOW_MS);
}
