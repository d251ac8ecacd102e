// Server → widget frames (docs/protocol.md, "Customer socket"), one handler per type. Each
// gets the widget (controller.js) and the parsed frame. Frames are untrusted input: fields are
// read defensively and every text reaches the page as text.

// Error codes whose own words the widget has (i18n.js); other errors show the server's message.
const EXPLAINED_ERRORS = ["rate_limited", "unavailable", "message_too_long"];
const RETRY_UNAVAILABLE_MS = 3000;
const CUSTOMER_ERRORS = ["customer_token_invalid", "customer_token_expired", "customer_mismatch"];

const HANDLERS = {
  // Always the first frame: which conversation this socket is.
  conversation(widget, frame) {
    widget.socket.established();
    widget.status = frame.status || "bot";
    widget.setConnectionState("online");
    widget.view.humanButton.hidden = widget.status !== "bot";
    if (frame.token) {
      // A new conversation (the first, or the stored one was gone): keep its id and token.
      widget.conversation = { id: frame.id, token: frame.token };
      widget.ended = false;
      widget.csatState = 0;
      widget.save();
      widget.resetLog();
      widget.reattachPending();
    }
    // A resumed one is ready once its history is drawn (below).
    if (!frame.resumed) {
      widget.socket.ready = true;
      widget.flush();
    }
  },

  history(widget, frame) {
    const { view } = widget;
    widget.resetLog();
    for (const message of frame.messages || []) {
      // The back-end calls an answer made (action frames, latest state) come before it.
      for (const call of Array.isArray(message.calls) ? message.calls : []) HANDLERS.action(widget, call);
      if (message.role === "customer") {
        widget.customerSpoke = true;
        // Stored before the last connection dropped: no longer pending, never to be resent.
        const pending = widget.pending.get(message.client_id);
        if (message.client_id && pending) {
          pending.remove();
          widget.forget(message.client_id);
        }
        view.add(widget.customerMessage(message.text));
      } else if (message.role === "system") {
        view.systemLine(message.text);
      } else {
        const author = message.role === "agent" && (message.agent_name || widget.t.agent);
        const bubble = widget.answer(message.id, message.text || "", author);
        if (message.role === "bot") {
          view.sources(bubble, message.sources);
          view.finishAnswer(bubble, message.rating, message.partial);
        }
      }
    }
    widget.save();
    widget.reattachPending();
    widget.socket.ready = true;
    widget.flush();
    if (widget.status === "closed") widget.markEnded();
    else widget.restartIdleClock();
  },

  "message.ack"(widget, frame) {
    const li = widget.pending.get(frame.client_id);
    if (li) widget.view.acknowledged(li);
    widget.forget(frame.client_id);
    if (!frame.duplicate && widget.status === "bot") {
      widget.awaitingAnswer = true;
      widget.acks++;
      widget.updateTypingDots();
    }
    widget.restartIdleClock();
  },

  "bot.start"(widget, frame) {
    widget.acksAtAnswerStart = widget.acks;
    const bubble = widget.bubbles.get(frame.message_id) || widget.answer(frame.message_id, "");
    // A guard changed the answer shown so far: the deltas that follow are all of it.
    if (frame.replace) bubble.rewrite("");
    widget.streaming = bubble;
    bubble.li.setAttribute("aria-busy", "true");
    widget.updateTypingDots();
  },

  "bot.delta"(widget, frame) {
    const bubble = widget.bubbles.get(frame.message_id) || widget.answer(frame.message_id, "");
    // The first words of the answer to the newest message: no more dots. (An answer to an
    // earlier message while a newer one waits keeps them.)
    if (!bubble.text && widget.acksAtAnswerStart === widget.acks) widget.awaitingAnswer = false;
    widget.view.keepAtBottom(() => bubble.write(String(frame.text || "")));
    widget.updateTypingDots();
  },

  "bot.done"(widget, frame) {
    const bubble = widget.bubbles.get(frame.message_id);
    if (bubble === widget.streaming) widget.streaming = null;
    if (widget.acksAtAnswerStart === widget.acks) widget.awaitingAnswer = false;
    widget.updateTypingDots();
    if (bubble && !bubble.thumbUp) {
      widget.view.sources(bubble, frame.sources);
      // A fallback answer stands on its own: only a model answer that stopped is "cut off".
      widget.view.finishAnswer(bubble, null, frame.partial && !frame.fallback);
      // The answer offers a human: the button to ask for one is in reach.
      if (frame.offer_human && widget.status === "bot") widget.view.showHumanButton(true);
      if (widget.view.atBottom()) widget.view.scrollToEnd();
    }
    widget.received();
  },

  // A call the bot made to the company's back end, before the answer that tells of it: one
  // card per call_id, drawn again in place as the call moves on (confirm_required →
  // confirmed → ok or error, or → cancelled).
  action(widget, frame) {
    const key = String(frame.call_id);
    const card = widget.calls.get(key) || widget.view.actionCard();
    widget.calls.set(key, card);
    widget.view.keepAtBottom(() => card.draw(frame));
  },

  "agent.message"(widget, frame) {
    widget.awaitingAnswer = false;
    widget.updateTypingDots();
    widget.status = "human";
    widget.view.showHumanButton(false);
    if (!widget.bubbles.has(frame.id)) widget.answer(frame.id, frame.text || "", frame.agent_name || widget.t.agent);
    widget.received();
  },

  "feedback.ack"(widget, frame) {
    const bubble = widget.bubbles.get(frame.message_id);
    if (bubble && bubble.thumbUp) widget.view.showRating(bubble, frame.rating);
  },

  "csat.ack"(widget) {
    if (widget.csatCard) widget.view.replaceWithSystemLine(widget.csatCard, widget.t.csatThanks);
    widget.csatState = 2;
    widget.save();
  },

  "handoff.ack"(widget, frame) {
    widget.view.showHumanButton(false);
    widget.status = "waiting";
    widget.awaitingAnswer = false;
    widget.updateTypingDots();
    // Outside business hours the server sends them, formatted in the site's time zone and
    // the conversation's language (chat/hours.py): shown as they come.
    const hours = typeof frame.business_hours_text === "string" ? frame.business_hours_text : "";
    widget.view.systemLine(hours ? widget.t.teamAway + hours : widget.t.handoffRequested);
    if (frame.ask_contact) widget.view.contactCard();
  },

  "contact.ack"(widget) {
    widget.view.systemLine(widget.t.contactThanks);
  },

  "agent.joined"(widget, frame) {
    widget.status = "human";
    widget.view.showHumanButton(false);
    widget.awaitingAnswer = false;
    widget.updateTypingDots();
    widget.view.systemLine(widget.t.agentJoined(frame.agent_name || widget.t.agent));
  },

  "agent.left"(widget) {
    widget.status = "bot";
    widget.view.humanButton.hidden = false;
    widget.view.systemLine(widget.t.agentLeft);
  },

  "agent.typing"(widget) {
    widget.agentTyping();
  },

  "conversation.closed"(widget) {
    if (!widget.ended) widget.markEnded();
  },

  error(widget, frame) {
    const t = widget.t;
    // A customer token the desk refused is the page's to fix (docs/verified-customers.md),
    // not the visitor's: the chat goes on unverified, and the page's developer is told.
    if (CUSTOMER_ERRORS.includes(frame.code)) return console.warn("[CS Desk widget] " + String(frame.message || frame.code));
    // The message was for a conversation that has ended: it starts a new one.
    if (frame.code === "conversation_closed") return widget.restart();
    if (frame.code === "rate_limited" || frame.code === "unavailable") {
      // Everything unacknowledged goes again, after the server's wait.
      clearTimeout(widget.timers.flush);
      const wait = frame.code === "rate_limited" ? (frame.retry_after || 10) * 1000 : RETRY_UNAVAILABLE_MS;
      widget.timers.flush = setTimeout(() => widget.socket.ready && widget.flush(), wait);
    } else if (frame.client_id && widget.pending.has(frame.client_id)) {
      // A message the server refused for good (it names it): say so, don't resend it.
      widget.view.setPendingLabel(widget.pending.get(frame.client_id), frame.message || t.somethingWrong);
      widget.forget(frame.client_id);
    }
    widget.showError(EXPLAINED_ERRORS.includes(frame.code) ? t[frame.code] : frame.message || t.somethingWrong);
  },
};

export function handleFrame(widget, frame) {
  // Own properties only: a frame typed "constructor" or "__proto__" is not a handler.
  if (Object.prototype.hasOwnProperty.call(HANDLERS, frame.type)) HANDLERS[frame.type](widget, frame);
}
