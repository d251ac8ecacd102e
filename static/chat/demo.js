// The demo page's chat client: one WebSocket to /ws/chat/, frames as in docs/protocol.md.
// Text from the customer and the model is only ever set with textContent, never as HTML.
"use strict";

(function () {
  const STORE = "cs-demo-conversation";
  const root = document.querySelector(".chat");
  const log = document.getElementById("log");
  const form = document.getElementById("composer");
  const input = document.getElementById("text");
  const statusEl = document.getElementById("status");
  const errorEl = document.getElementById("error");

  let socket = null;
  let retry = 0;
  // Messages wait until the server has said which conversation this socket is (and drawn its
  // history): a message sent earlier would be drawn, then wiped by the log's redraw.
  let ready = false;
  const unacked = new Map(); // client_id → {text, el}: resent after a reconnect
  const bubbles = new Map(); // message id → element
  const cards = new Map(); // action call id → element

  function saved() {
    try { return JSON.parse(localStorage.getItem(STORE)) || null; } catch (e) { return null; }
  }

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function showError(text) {
    errorEl.textContent = text;
    errorEl.hidden = !text;
  }

  function bubble(role, text, id) {
    const li = document.createElement("li");
    li.className = "msg msg--" + role;
    li.textContent = text;
    if (id !== undefined && id !== null) { li.dataset.id = id; bubbles.set(id, li); }
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
    return li;
  }

  // A call of the shop's back end (docs/protocol.md, `action`): one card per call, updated in
  // place when its status changes; Confirm and Cancel for a call that changes something.
  function actionCard(frame) {
    let li = cards.get(frame.call_id);
    if (!li) {
      li = document.createElement("li");
      li.className = "msg msg--action";
      cards.set(frame.call_id, li);
      log.appendChild(li);
    }
    li.textContent = "";
    li.dataset.status = frame.status;
    const head = document.createElement("strong");
    head.textContent = frame.label + " · " + frame.status.replace("_", " ");
    li.appendChild(head);
    const body = document.createElement("span");
    body.className = "msg__body";
    body.textContent = frame.status === "confirm_required" ? frame.confirm_text : frame.text;
    li.appendChild(body);
    if (frame.status === "confirm_required") {
      for (const [label, type] of [["Confirm", "action.confirm"], ["Cancel", "action.cancel"]]) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = label;
        button.addEventListener("click", () => {
          for (const b of li.querySelectorAll("button")) b.disabled = true;
          send({ type, call_id: frame.call_id });
        });
        li.appendChild(button);
      }
    }
    log.scrollTop = log.scrollHeight;
  }

  function connect() {
    const conv = saved();
    const params = new URLSearchParams({ lang: navigator.language || "", page: location.href });
    try { params.set("tz", Intl.DateTimeFormat().resolvedOptions().timeZone || ""); } catch (e) { /* old browser */ }
    if (conv) { params.set("conversation", conv.id); params.set("token", conv.token); }
    if (root.dataset.customerToken) params.set("customer_token", root.dataset.customerToken);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setStatus(retry ? "reconnecting" : "connecting", retry ? "Reconnecting…" : "Connecting…");
    ready = false;
    socket = new WebSocket(scheme + location.host + root.dataset.wsPath + "?" + params);
    socket.onopen = () => { retry = 0; };
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = (event) => {
      setStatus("offline", "Offline");
      if (event.code === 4404) { localStorage.removeItem(STORE); }
      // Back off up to 15 s so a restarting server is not hammered.
      const delay = Math.min(15000, 500 * 2 ** retry++) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  function handle(frame) {
    switch (frame.type) {
      // Always the first frame. A resumed conversation is ready once its history is drawn.
      case "conversation":
        setStatus("open", "Online");
        if (frame.token) {
          localStorage.setItem(STORE, JSON.stringify({ id: frame.id, token: frame.token }));
          log.textContent = "";
          bubbles.clear();
          cards.clear();
          reattachUnacked();
        }
        if (!frame.resumed) sendUnacked();
        break;
      case "history":
        log.textContent = "";
        bubbles.clear();
        for (const m of frame.messages) {
          if (m.client_id && unacked.has(m.client_id)) unacked.delete(m.client_id);
          if (m.text) bubble(m.role, m.text, m.id);
        }
        reattachUnacked();
        sendUnacked();
        break;
      case "message.ack": {
        const item = unacked.get(frame.client_id);
        if (item) {
          item.el.classList.remove("msg--pending");
          item.el.dataset.id = frame.id;
          bubbles.set(frame.id, item.el);
          unacked.delete(frame.client_id);
        }
        break;
      }
      case "bot.start":
        bubble("bot", "", frame.message_id).classList.add("msg--streaming");
        break;
      case "bot.delta": {
        const el = bubbles.get(frame.message_id) || bubble("bot", "", frame.message_id);
        el.textContent += frame.text;
        log.scrollTop = log.scrollHeight;
        break;
      }
      case "bot.done": {
        const el = bubbles.get(frame.message_id);
        if (el) {
          el.classList.remove("msg--streaming");
          const meta = document.createElement("span");
          meta.className = "msg__meta";
          meta.textContent = frame.fallback ? "automatic reply"
            : frame.usage.completion_tokens + " tokens · " + (frame.total_ms / 1000).toFixed(1) + " s";
          el.appendChild(meta);
        }
        break;
      }
      case "action":
        actionCard(frame);
        break;
      case "error":
        showError(frame.message);
        break;
    }
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  }

  // Messages not acknowledged yet stay last in the log, after it is drawn again.
  function reattachUnacked() {
    for (const item of unacked.values()) log.appendChild(item.el);
    log.scrollTop = log.scrollHeight;
  }

  // Each carries its client_id, so one the server already stored is acknowledged, not doubled.
  function sendUnacked() {
    ready = true;
    for (const [clientId, item] of unacked) send({ type: "message", text: item.text, client_id: clientId });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    showError("");
    const clientId = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now() + Math.random());
    const el = bubble("customer", text);
    el.classList.add("msg--pending");
    unacked.set(clientId, { text, el });
    if (ready) send({ type: "message", text, client_id: clientId });
    input.value = "";
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });

  document.getElementById("new-conversation").addEventListener("click", () => {
    localStorage.removeItem(STORE);
    unacked.clear();
    if (socket) socket.close();
  });

  connect();
})();
