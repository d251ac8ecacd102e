// The staff playground (/console/playground/). A question goes to the send endpoint with the
// settings of each pane shown (one, or two side by side) and each answer comes back as
// Server-Sent Events read from a fetch() stream: a POST, so the CSRF token goes along, which
// EventSource cannot do. Model and staff text only ever enter the page through textContent
// and text nodes, never as HTML. The settings forms themselves are htmx partials.
(() => {
  "use strict";

  const root = document.getElementById("playground");
  if (!root) return;
  const $ = (sel, el = document) => el.querySelector(sel);

  const PANE_KEYS = ["a", "b"];
  const panes = {};
  for (const key of PANE_KEYS) {
    // conversation: the pane's playground conversation once the server made one.
    panes[key] = { key, conversation: null, controller: null, totals: newTotals() };
  }
  const composer = $("#pg-composer");
  const message = $("#pg-message");
  const sendButton = $("#pg-send");
  const stopButton = $("#pg-stop");
  const compare = $("#pg-compare");
  const exportLink = $("#pg-export");
  const statusLine = $("#pg-status");

  function newTotals() {
    return { answers: 0, prompt: 0, completion: 0, ms: 0 };
  }
  const shownPanes = () => (compare.checked ? PANE_KEYS : ["a"]).map((key) => panes[key]);
  const settingsForm = (key) => document.getElementById(key + "-settings");
  const transcript = (pane) => document.getElementById(pane.key + "-transcript");
  const say = (text) => { statusLine.textContent = text; };

  // --- Settings -----------------------------------------------------------------------------

  // A slider and its number box move together; the browser keeps the slider within its
  // min, max and step, and the box shows what the slider made of a typed value once left.
  document.addEventListener("input", (event) => {
    const el = event.target;
    if (!el.closest || !el.closest(".pg-settings")) return;
    if (el.type === "range") {
      const box = document.querySelector(`.pg-num[data-for="${el.id}"]`);
      if (box) box.value = el.value;
    } else if (el.classList.contains("pg-num") && el.value !== "") {
      const range = document.getElementById(el.dataset.for);
      if (range) range.value = el.value;
    }
  });
  document.addEventListener("change", (event) => {
    const el = event.target;
    if (el.classList && el.classList.contains("pg-num")) {
      const range = document.getElementById(el.dataset.for);
      if (range) el.value = range.value;
    }
  });

  // The settings are never submitted as a page (Enter in a text box would do that).
  document.addEventListener("submit", (event) => {
    if (event.target.matches(".pg-settings")) event.preventDefault();
  });

  // {current_time} is rendered in the pane's time zone: the browser's unless one is chosen.
  const browserZone = (() => {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch {
      return "";
    }
  })();
  function fillZones() {
    document.querySelectorAll(".pg-settings input[data-browser-default]").forEach((input) => {
      if (input.value || !browserZone) return;
      input.value = browserZone;
      const preview = input.form && $(".pg-preview", input.form);
      if (preview && window.htmx) window.htmx.trigger(preview, "pg:refresh");
    });
  }
  fillZones();

  // A swapped-in confirmation or "Saved" note may land below the fold of a long settings
  // column: bring it into view once, and put the keyboard on the confirmation.
  function showNewParts() {
    document.querySelectorAll(".pg-confirm:not([data-seen]), .pg-note:not([data-seen])")
      .forEach((el) => {
        el.dataset.seen = "1";
        el.scrollIntoView({ block: "nearest" });
        const first = el.matches(".pg-confirm") && el.querySelector("input:not(:disabled), button");
        if (first) first.focus();
      });
  }
  document.addEventListener("htmx:afterSettle", () => {
    fillZones();
    showNewParts();
  });

  // On a narrow screen the settings start folded, so the answers are in sight.
  if (window.matchMedia("(max-width: 1000px)").matches) {
    document.querySelectorAll(".pg-pane__settings").forEach((details) => { details.open = false; });
  }

  // "Copy settings from A": B starts from A's values, to change only what is compared.
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("[data-copy-from]");
    if (!button) return;
    const from = settingsForm(button.dataset.copyFrom);
    const to = settingsForm(button.dataset.copyTo);
    for (const source of from.elements) {
      if (!source.name || ["pane", "csrfmiddlewaretoken", "target", "new_name"].includes(source.name)) continue;
      const target = to.elements.namedItem(source.name);
      if (!target || target instanceof RadioNodeList) continue;
      if (source.type === "range") target.max = source.max; // the profile's max_tokens
      target.value = source.value;
      target.dispatchEvent(new Event("input", { bubbles: true }));
    }
    say("Pane B has pane A's settings.");
  });

  function settingsSummary(form) {
    const value = (name) => form.elements.namedItem(name).value;
    const profile = form.elements.namedItem("profile");
    const parts = [
      profile.options[profile.selectedIndex].textContent.trim(),
      `temperature ${value("temperature")}`, `top p ${value("top_p")}`,
      `max tokens ${value("max_tokens")}`, `frequency penalty ${value("frequency_penalty")}`,
      value("language"),
    ];
    if (value("region")) parts.push(value("region"));
    return parts.join(" · ");
  }

  // --- Side by side, sessions, export -------------------------------------------------------

  function showCompare() {
    $("#pane-b").hidden = !compare.checked;
    root.classList.toggle("pg--compare", compare.checked);
  }
  compare.addEventListener("change", () => {
    showCompare();
    say(compare.checked ? "Side by side: each question goes to A and B." : "One pane: A.");
  });
  showCompare(); // a reload may keep the box ticked

  function updateExport() {
    const params = new URLSearchParams();
    for (const key of PANE_KEYS) {
      if (panes[key].conversation) params.set(key, panes[key].conversation);
    }
    if ([...params.keys()].length) {
      exportLink.href = root.dataset.exportUrl + "?" + params;
      exportLink.removeAttribute("aria-disabled");
    } else {
      exportLink.removeAttribute("href");
      exportLink.setAttribute("aria-disabled", "true");
    }
  }
  exportLink.addEventListener("click", (event) => {
    if (!exportLink.hasAttribute("href")) {
      event.preventDefault();
      say("Ask something first: the export is built from the session's stored messages.");
    }
  });

  $("#pg-new").addEventListener("click", () => {
    for (const pane of Object.values(panes)) {
      if (pane.controller) pane.controller.abort();
      pane.conversation = null;
      pane.totals = newTotals();
      transcript(pane).replaceChildren();
      renderTotals(pane);
    }
    updateExport();
    say("New session: the next question starts new conversations.");
    message.focus();
  });

  // --- Asking -------------------------------------------------------------------------------

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
      pane.conversation = response.headers.get("X-Playground-Conversation") || pane.conversation;
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
          finish(pane, answer, frame);
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

  function silenceText(status) {
    return {
      waiting: "The conversation waits for a human, so the bot stays silent. Start a new session.",
      human: "A human holds this conversation, so the bot stays silent. Start a new session.",
      closed: "This conversation is closed. Start a new session.",
    }[status] || `The bot stays silent (${status}).`;
  }

  // One Server-Sent Event at a time from a response body: [event name, parsed data].
  async function* sseEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
        }
        if (data) yield [name, JSON.parse(data)];
      }
    }
  }

  // --- Transcript and figures ---------------------------------------------------------------

  const WHO = { customer: "Customer (you)", bot: "Bot" };

  function addMessage(pane, role, text) {
    const item = document.createElement("li");
    item.className = "pg-msg pg-msg--" + role;
    addLine(item, "pg-msg__who", WHO[role]);
    addLine(item, "pg-msg__text", text);
    transcript(pane).append(item);
    scrollToEnd(pane);
    return item;
  }

  function addLine(parent, className, text) {
    const line = document.createElement("div");
    line.className = className;
    line.textContent = text;
    parent.append(line);
    return line;
  }

  function scrollToEnd(pane) {
    const list = transcript(pane);
    list.scrollTop = list.scrollHeight;
  }

  // Completion tokens over the time from the first token to the end (the whole answer's
  // time when that is unknown): agents/playground.py's tokens_per_second, for the export.
  function tokensPerSecond(completion, ttftMs, totalMs) {
    if (!completion || !totalMs) return null;
    const span = ttftMs != null && totalMs > ttftMs ? totalMs - ttftMs : totalMs;
    return Math.round((completion * 10000) / span) / 10;
  }

  const duration = (ms) => (ms == null ? "—" : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`);

  function finish(pane, answer, done) {
    const usage = done.usage || { prompt_tokens: 0, completion_tokens: 0 };
    const speed = tokensPerSecond(usage.completion_tokens, done.ttft_ms, done.total_ms);
    const figures = [
      ["prompt_tokens", "Prompt", usage.prompt_tokens, `${usage.prompt_tokens} tokens`],
      ["completion_tokens", "Completion", usage.completion_tokens, `${usage.completion_tokens} tokens`],
      ["ttft_ms", "First token", done.ttft_ms, duration(done.ttft_ms)],
      ["tokens_per_second", "Speed", speed, speed == null ? "—" : `${speed} tokens/s`],
      ["total_ms", "Total", done.total_ms, duration(done.total_ms)],
      ["finish_reason", "Finish", done.finish_reason, done.finish_reason],
    ];
    const guards = Array.isArray(done.guards) ? done.guards.join(", ") : "";
    if (guards) figures.push(["guards", "Guards", guards, guards]);
    const list = document.createElement("dl");
    list.className = "pg-figures";
    for (const [key, label, raw, shown] of figures) {
      const figure = document.createElement("div");
      figure.dataset.figure = key;
      const term = document.createElement("dt");
      term.textContent = label;
      const value = document.createElement("dd");
      value.textContent = shown;
      value.dataset.value = raw == null ? "" : String(raw);
      figure.append(term, value);
      list.append(figure);
    }
    answer.append(list);
    if (done.fallback) addLine(answer, "pg-msg__flag", "Fallback rules answered: the model was unavailable or too slow.");
    else if (done.partial) addLine(answer, "pg-msg__flag", "Cut off: partial answer.");
    pane.totals.answers += 1;
    pane.totals.prompt += usage.prompt_tokens || 0;
    pane.totals.completion += usage.completion_tokens || 0;
    pane.totals.ms += done.total_ms || 0;
    renderTotals(pane);
    scrollToEnd(pane);
  }

  function renderTotals(pane) {
    const t = pane.totals;
    $(`#${pane.key}-totals`).textContent = t.answers
      ? `${t.answers} answer${t.answers === 1 ? "" : "s"} · ${t.prompt} prompt + ${t.completion} completion tokens · ${duration(t.ms)} in all`
      : "No answers yet.";
  }
})();
