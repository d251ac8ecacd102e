// Asking: the question box sends to each pane shown, and each answer streams into its pane.
// The send endpoint answers with Server-Sent Events (docs/protocol.md's frames), or refuses
// with JSON ({error: {message}}) that is shown under the question.

import { $, addLine } from "./dom.js";
import { showFigures } from "./figures.js";
import { say, settingsForm } from "./page.js";
import { settingsSummary } from "./settings.js";
import { sseEvents } from "./sse.js";
import { addMessage, scrollToEnd } from "./transcript.js";

// The new conversation's id: the stream itself stays docs/protocol.md's
// (agents/playground/views.py CONVERSATION_HEADER).
const CONVERSATION_HEADER = "X-Playground-Conversation";

/** `session`: setupSession's {shownPanes, updateExport}. */
export function setupAsking(root, panes, { shownPanes, updateExport }) {
  const composer = $("#pg-composer");
  const message = $("#pg-message");
  const sendButton = $("#pg-send");
  const stopButton = $("#pg-stop");

  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  stopButton.addEventListener("click", () => {
    for (const pane of Object.values(panes)) if (pane.controller) pane.controller.abort();
  });

  let busy = false;
  function setBusy(value) {
    busy = value;
    sendButton.disabled = value;
    stopButton.hidden = !value;
  }

  async function send() {
    const text = message.value.trim();
    if (!text || busy) return;
    message.value = "";
    setBusy(true);
    say("");
    try {
      await Promise.all(shownPanes().map((pane) => ask(pane, text)));
    } finally {
      setBusy(false);
      message.focus();
    }
  }

  async function ask(pane, text) {
    const form = settingsForm(pane.key);
    const body = new URLSearchParams(new FormData(form));
    body.set("message", text);
    if (pane.conversation) body.set("conversation", pane.conversation);
    const question = addMessage(pane, "customer", text);
    const answer = addMessage(pane, "bot", "");
    answer.classList.add("pg-msg--streaming");
    addLine(answer, "pg-msg__settings", settingsSummary(form));
    const answerText = $(".pg-msg__text", answer);
    pane.controller = new AbortController();
    try {
      const response = await fetch(root.dataset.sendUrl, {
        method: "POST", body, credentials: "same-origin", signal: pane.controller.signal,
        headers: { "X-CSRFToken": form.elements.namedItem("csrfmiddlewaretoken").value,
                   Accept: "text/event-stream" },
      });
      if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        answer.remove();
        question.classList.add("pg-msg--refused");
        addLine(question, "pg-msg__error", await refusal(response));
        return;
      }
      pane.conversation = response.headers.get(CONVERSATION_HEADER) || pane.conversation;
      updateExport();
      for await (const [name, frame] of sseEvents(response.body)) {
        if (name === "bot.delta") {
          answerText.append(frame.text); // a text node: never parsed as HTML
          scrollToEnd(pane);
        } else if (name === "message.ack") {
          question.dataset.id = frame.id;
        } else if (name === "bot.start") {
          answer.dataset.id = frame.message_id;
          // A guard changed the answer shown so far: the deltas that follow are all of it.
          if (frame.replace) answerText.textContent = "";
        } else if (name === "bot.done") {
          showFigures(pane, answer, frame);
        } else if (name === "status") {
          addLine(answer, "pg-msg__error", silenceText(frame.status));
        } else if (name === "error") {
          addLine(answer, "pg-msg__error", frame.message || "The answer failed.");
        }
      }
    } catch (err) {
      addLine(answer, "pg-msg__error", err.name === "AbortError"
        ? "Stopped. What was said so far is kept." : "The connection broke: " + err.message);
    } finally {
      answer.classList.remove("pg-msg--streaming");
      pane.controller = null;
    }
  }
}

/** Why the server did not answer, for the line under the question. */
async function refusal(response) {
  if (response.redirected || (response.headers.get("Content-Type") || "").startsWith("text/html")) {
    return response.status === 403
      ? "The page is out of date (CSRF): reload it."
      : "Your login has ended: reload the page to log in again.";
  }
  try {
    const body = await response.json();
    return body.error.message;
  } catch {
    return `The server refused the question (HTTP ${response.status}).`;
  }
}

/** The `status` event: the bot stays silent because of who holds the conversation. */
function silenceText(status) {
  return {
    waiting: "The conversation waits for a human, so the bot stays silent. Start a new session.",
    human: "A human holds this conversation, so the bot stays silent. Start a new session.",
    closed: "This conversation is closed. Start a new session.",
  }[status] || `The bot stays silent (${status}).`;
}
