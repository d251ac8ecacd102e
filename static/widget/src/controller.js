// One chat widget on a page: its state, and what the visitor's actions do. Frames from the
// server are handled in frames.js, the DOM is drawn by view.js, the socket kept by socket.js.

import { createThrottle, TYPING_EVERY_MS } from "../../shared/src/throttle.js";
import { handleFrame } from "./frames.js";
import { stringsFor } from "./i18n.js";
import { ChatSocket } from "./socket.js";
import { loadState, saveState } from "./storage.js";
import { PANEL_CSS } from "./styles.js";
import { PanelView } from "./view.js";

const ERROR_SHOWN_MS = 8000;
const AGENT_TYPING_SHOWN_MS = 4000; // the agent's console signals every 3 s while typing

/** A client_id for a message: resends after a reconnect carry the same one. */
function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID(); // secure contexts only
  return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) =>
    (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));
}

export class ChatWidget {
  /** @param {object} ctx from embed.js: {sr, w, btn, cfg, key, base, lang, store, css, icon, CHAT, idle, tok, onTok} */
  constructor(ctx) {
    this.ctx = ctx;
    this.t = stringsFor(ctx.lang);
    this.idleMs = ctx.idle > 0 ? ctx.idle * 60000 : 0; // silence before asking for a rating
    ctx.css(ctx.sr, PANEL_CSS);

    const saved = loadState(ctx.store);
    this.conversation = saved.conversation; // {id, token} to resume, or null
    this.queue = saved.queue; // [{c: client_id, t: text}] typed, not acknowledged yet
    this.csatState = saved.csat; // 1 sent, 2 acknowledged

    this.opened = false;
    this.everOpened = false;
    this.ended = false; // the conversation was closed; the next message starts a new one
    this.status = "bot"; // the server's: bot, waiting, human or closed
    this.connectionState = "";
    this.customerSpoke = false; // no rating is asked of a conversation without a message
    this.unread = 0;
    this.idleDue = false; // the idle time passed while the panel was closed: ask on open
    // The typing dots: shown from a message's ack until its answer's first text.
    this.awaitingAnswer = false;
    this.acks = 0; // customer messages acknowledged (and so to be answered)
    this.acksAtAnswerStart = 0; // …when the current answer started: later ones await another
    this.streaming = null; // the answer being written
    this.csatCard = null;
    this.bubbles = new Map(); // message id → answer (view.answer)
    this.calls = new Map(); // action call_id → its card (view.actionCard)
    this.pending = new Map(); // client_id → customer message not acknowledged yet
    this.outbox = []; // frames (ratings, hand-off…) waiting for the connection
    this.typingThrottle = createThrottle(TYPING_EVERY_MS);
    this.timers = {};

    this.view = new PanelView(ctx, this.t, {
      submit: (text) => this.submit(text),
      handoff: () => this.handoff(),
      endChat: () => this.endChat(),
      minimise: () => this.close(),
      typed: () => {
        // While a human is (or will be) on the other side, tell them the customer is typing.
        if (this.status !== "bot" && this.typingThrottle()) this.send({ type: "typing" });
      },
      rate: (bubble, rating) => this.rate(bubble, rating),
      comment: (bubble, comment) =>
        this.send({ type: "feedback", message_id: bubble.id, rating: bubble.rating, comment }, true),
      csat: (score, comment) => this.send({ type: "csat", score, ...(comment && { comment }) }, true),
      contact: (email) => this.send({ type: "contact", email }, true),
      // An action card's Confirm or Cancel: the server takes the first answer of any tab.
      act: (type, callId) => this.send({ type, call_id: callId }, true),
    });

    let timeZone = "";
    try {
      timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch {
      // no Intl: the server uses the site's zone
    }
    this.socket = new ChatSocket({
      url: () => {
        const params = new URLSearchParams({ site: ctx.key, lang: ctx.lang, page: location.href, tz: timeZone });
        if (this.conversation) {
          params.set("conversation", this.conversation.id);
          params.set("token", this.conversation.token);
        }
        // The verified customer (docs/verified-customers.md): checked by the desk as it opens.
        const customerToken = ctx.tok && ctx.tok();
        if (customerToken) params.set("customer_token", customerToken);
        return ctx.base.replace(/^http/, "ws") + "/ws/chat/?" + params;
      },
      wanted: () => Boolean(this.everOpened || this.conversation || this.queue.length),
      ended: () => this.ended,
      onFrame: (frame) => handleFrame(this, frame),
      onState: (state) => this.setConnectionState(state),
      onRefused: () => {
        console.warn("[CS Desk widget] this site key may not be used on this page");
        ctx.sr.host.remove();
      },
      onConversationGone: () => {
        this.conversation = null;
        this.save();
      },
    });

    // A fresh customer token from the page goes at once (or once connected); the socket's
    // next opening carries the newest one anyway.
    if (ctx.onTok) ctx.onTok((token) => this.sendCustomerToken(token));

    this.greet();
    for (const item of this.queue) this.view.log.append(this.customerMessage(item.t, item.c));
    this.setConnectionState("connecting");
    this.socket.connect();
  }

  /** What embed.js calls. */
  get api() {
    return { open: (noFocus) => this.open(noFocus), close: () => this.close(), toggle: () => (this.opened ? this.close() : this.open()) };
  }

  save() {
    saveState(this.ctx.store, {
      // An ended conversation is forgotten: a reload or the next message starts a new one.
      conversation: this.ended ? null : this.conversation,
      queue: this.queue,
      csat: this.csatState,
    });
  }

  // --- Sending --------------------------------------------------------------------------

  /** Sends now if connected; `keep`: else send it once connected (see flush). */
  send(frame, keep = false) {
    if (!this.socket.send(frame) && keep) this.outbox.push(frame);
  }

  /** Once the server knows the conversation: unacknowledged messages, then kept frames. */
  flush() {
    for (const item of this.queue) this.send({ type: "message", text: item.t, client_id: item.c });
    for (const frame of this.outbox.splice(0)) this.send(frame, true);
  }

  sendCustomerToken(token) {
    this.outbox = this.outbox.filter((frame) => frame.type !== "customer.token"); // the newest only
    this.send({ type: "customer.token", token }, true);
  }

  forget(clientId) {
    this.pending.delete(clientId);
    this.queue = this.queue.filter((item) => item.c !== clientId);
    this.save();
  }

  // --- What the panel shows -------------------------------------------------------------

  setConnectionState(state) {
    if (!navigator.onLine) state = "offline";
    this.connectionState = state;
    this.view.setConnectionState(state);
    for (const li of this.pending.values()) this.view.setPendingLabel(li, this.pendingLabel());
  }

  pendingLabel() {
    return this.connectionState === "online" ? this.t.sending : this.t.notSentYet;
  }

  customerMessage(text, clientId) {
    const li = this.view.customerMessage(text, clientId && this.pendingLabel());
    if (clientId) this.pending.set(clientId, li);
    return li;
  }

  /** Unacknowledged messages stay last in the log, after history drawn again. */
  reattachPending() {
    for (const li of this.pending.values()) this.view.log.append(li);
    this.view.scrollToEnd();
  }

  answer(id, text, author) {
    const bubble = this.view.answer(id, text, author);
    if (id != null) this.bubbles.set(id, bubble);
    return bubble;
  }

  greet() {
    if (this.ctx.cfg.greeting) this.answer(null, String(this.ctx.cfg.greeting));
  }

  resetLog() {
    this.view.clearLog();
    this.bubbles.clear();
    this.calls.clear();
    this.streaming = this.csatCard = null;
    this.awaitingAnswer = false;
    this.greet();
  }

  updateTypingDots() {
    this.view.setTypingDots(this.awaitingAnswer || Boolean(this.streaming && !this.streaming.text));
  }

  agentTyping() {
    this.view.setTypingDots(true);
    clearTimeout(this.timers.agentTyping);
    this.timers.agentTyping = setTimeout(() => this.updateTypingDots(), AGENT_TYPING_SHOWN_MS);
  }

  showError(text) {
    this.view.showError(text);
    clearTimeout(this.timers.error);
    if (text) this.timers.error = setTimeout(() => this.showError(""), ERROR_SHOWN_MS);
  }

  /** A message arrived: restart the idle clock, count it if the panel is closed. */
  received() {
    this.restartIdleClock();
    if (!this.opened) {
      this.unread++;
      this.view.drawLauncher(false, this.unread);
    }
  }

  // --- Ratings and the end of a conversation --------------------------------------------

  rate(bubble, rating) {
    bubble.rating = rating;
    this.send({ type: "feedback", message_id: bubble.id, rating }, true);
    this.view.askComment(bubble);
  }

  /** After a quiet while (or at the end), once per conversation. */
  showCsat() {
    this.idleDue = false;
    if (this.csatCard || this.csatState || !this.customerSpoke) return;
    this.csatCard = this.view.csatCard(() => {
      this.csatState = 1;
      this.save();
    });
  }

  restartIdleClock() {
    clearTimeout(this.timers.idle);
    if (this.idleMs && this.conversation && !this.ended) {
      this.timers.idle = setTimeout(() => (this.opened ? this.showCsat() : (this.idleDue = true)), this.idleMs);
    }
  }

  markEnded() {
    this.ended = true;
    this.awaitingAnswer = false;
    this.streaming = null;
    this.updateTypingDots();
    this.view.showHumanButton(false);
    clearTimeout(this.timers.idle);
    this.view.systemLine(this.t.chatEnded);
    this.showCsat();
    this.save();
  }

  /** A new conversation after the last one ended: forget it, reconnect without it. */
  restart() {
    this.conversation = null;
    this.ended = false;
    this.status = "bot";
    this.csatState = 0;
    this.customerSpoke = false;
    this.view.humanButton.hidden = false;
    this.save();
    this.socket.drop();
    this.socket.connectNow();
  }

  // --- The visitor's actions ------------------------------------------------------------

  submit(text) {
    if (this.ended) this.restart();
    const clientId = newClientId();
    this.queue.push({ c: clientId, t: text });
    this.save();
    this.customerSpoke = true;
    this.view.add(this.customerMessage(text, clientId), true);
    this.send({ type: "message", text, client_id: clientId });
    this.restartIdleClock();
  }

  handoff() {
    if (this.ended) this.restart();
    this.send({ type: "handoff.request" }, true);
  }

  endChat() {
    if (this.conversation && !this.ended) this.send({ type: "close" }, true);
    else this.close();
  }

  open(noFocus) {
    if (!this.opened) {
      this.opened = this.everOpened = true;
      this.unread = 0;
      this.view.setOpen(true);
      this.view.drawLauncher(true, 0);
      this.view.scrollToEnd();
      this.socket.connect();
      if (this.idleDue) this.showCsat();
    }
    if (!noFocus) this.view.input.focus();
  }

  close() {
    if (!this.opened) return;
    this.opened = false;
    this.view.setOpen(false);
    this.view.drawLauncher(false, this.unread);
    this.ctx.btn.focus();
  }
}
