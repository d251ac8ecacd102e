// The agent console's live side: one WebSocket (/ws/console/) that keeps the htmx partials
// fresh and streams the open conversation. Message text only ever enters the page through
// textContent / text nodes, never as HTML.
(() => {
  "use strict";

  const PING_MS = 20000; // presence beat (agents.presence counts an agent online for 60 s)
  const TYPING_EVERY_MS = 3000; // "agent is typing" at most this often
  const TYPING_SHOW_MS = 4000; // how long "Customer is typing…" stays without a new signal
  const ROLES = new Set(["customer", "bot", "agent", "system"]);

  const root = document.querySelector(".console");
  if (!root) return;
  const myName = root.dataset.userName || "";
  const $ = (sel, el = document) => el.querySelector(sel);

  let ws = null;
  let retries = 0;
  let everOpened = false;
  let pingTimer = null;
  let lastTypingSent = 0;
  let typingTimer = null;
  const drafts = {}; // conversation id → reply text not sent yet, kept across re-renders

  const currentId = () => {
    const conv = $(".conv[data-conversation-id]");
    return conv ? conv.dataset.conversationId : null;
  };

  // --- Socket -----------------------------------------------------------------------------

  function setConn(state, text) {
    const el = $("#conn");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function watchCurrent() {
    const id = currentId();
    send(id ? { type: "watch", conversation_id: id } : { type: "unwatch" });
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(scheme + "//" + location.host + root.dataset.wsPath);
    setConn("connecting", everOpened ? "Reconnecting…" : "Connecting…");
    ws.addEventListener("open", () => {
      retries = 0;
      setConn("open", "Live");
      if (everOpened) {
        // Whatever happened while the socket was down is on the server: fetch it again.
        ["#inbox", "#transcript", "#controls", "#conv-tickets", "#ticket-list",
          "#ticket-props", "#notes"].forEach((sel) => refresh(sel, 0));
      }
      watchCurrent();
      // What happened between rendering the page and this watch is in the database.
      if (!everOpened && currentId()) {
        refresh("#transcript", 300);
        refresh("#controls", 300);
      }
      everOpened = true;
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
    });
    ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") handle(frame);
    });
    ws.addEventListener("close", (event) => {
      clearInterval(pingTimer);
      if (event.code === 4403) {
        setConn("closed", "Signed out — reload to log in");
        return;
      }
      setConn("closed", "Offline — reconnecting…");
      const delay = Math.min(30000, 500 * 2 ** retries++) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    });
  }

  // At most one refresh of a partial per `wait` ms, however many events ask for it. A partial
  // whose request is still under way (htmx would drop the trigger) is refreshed after it.
  const scheduled = {};
  const SELF_RENDERING = new Set(["#controls", "#ticket-props"]);
  function refresh(sel, wait = 200) {
    if (!$(sel) || scheduled[sel]) return;
    scheduled[sel] = setTimeout(() => {
      scheduled[sel] = null;
      const el = $(sel);
      if (!el) return;
      if (el.classList.contains("htmx-request")) refresh(sel, 300);
      // An action under way inside (take over, hand back, close) re-renders the partial
      // itself, after the change, with its outcome (say, "Bea already holds this
      // conversation"): a refresh now would only wipe that message.
      else if (!(SELF_RENDERING.has(sel) && el.querySelector(".htmx-request"))) {
        htmx.trigger(el, "refresh");
      }
    }, wait);
  }

  // Opening a conversation in the pane: the socket watches it from the moment the request
  // leaves, and its events wait here until the pane is on screen (none fall in between).
  let opening = null;
  let held = [];
  let actionError = null; // see keepActionError

  function handle(frame) {
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
        if (!mine) alertHandoff(frame); // the open conversation shows it already
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
      case "conv.bot":
        if (mine) botFrame(frame.frame || {});
        break;
      case "conv.typing":
        if (mine && frame.who === "customer") showTyping("Customer is typing…");
        else if (mine && frame.who === "agent" && frame.name && frame.name !== myName) {
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

  // --- Transcript -------------------------------------------------------------------------

  function nearBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function scrollToEnd(list) {
    list.scrollTop = list.scrollHeight;
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function bubble(id, role, who) {
    const li = document.createElement("li");
    li.className = "msg msg--" + role;
    li.dataset.id = String(id);
    const time = document.createElement("time");
    time.dateTime = new Date().toISOString();
    time.textContent = clock(new Date());
    const text = document.createElement("div");
    text.className = "msg__text";
    if (role === "system") {
      li.append(text, " ", time);
    } else {
      const head = document.createElement("div");
      head.className = "msg__who";
      head.append(who, " ", time);
      li.append(head, text);
    }
    return li;
  }

  function findMessage(list, id) {
    return list.querySelector('li[data-id="' + CSS.escape(String(id)) + '"]');
  }

  function append(list, li) {
    const pinned = nearBottom(list);
    const empty = $(".transcript__empty", list);
    if (empty) empty.remove();
    list.append(li);
    if (pinned) scrollToEnd(list);
  }

  function upsertMessage(frame) {
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
      const pinned = nearBottom(list);
      $(".msg__text", li).textContent = frame.text;
      li.classList.remove("msg--streaming");
      li.dataset.final = "1";
      if (pinned) scrollToEnd(list);
    }
  }

  function botFrame(frame) {
    const list = $("#transcript");
    if (!list || frame.message_id === undefined) return;
    let li = findMessage(list, frame.message_id);
    if (!li) {
      li = bubble(frame.message_id, "bot", "Bot");
      append(list, li);
    }
    if (li.dataset.final === "1") return; // already complete on screen
    const pinned = nearBottom(list);
    if (frame.type === "bot.start") {
      li.classList.add("msg--streaming");
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
      if (notes.length && !$(".msg__meta", li)) {
        const meta = document.createElement("div");
        meta.className = "msg__meta";
        for (const note of notes) {
          const tag = document.createElement("span");
          tag.className = "tag";
          tag.textContent = note;
          meta.append(tag);
        }
        li.append(meta);
      }
    }
    if (pinned) scrollToEnd(list);
  }

  function showTyping(text) {
    const el = $("#typing");
    if (!el) return;
    clearTimeout(typingTimer);
    if (!text) {
      el.hidden = true;
      return;
    }
    el.textContent = text;
    el.hidden = false;
    typingTimer = setTimeout(() => (el.hidden = true), TYPING_SHOW_MS);
  }

  // --- Hand-off alerts --------------------------------------------------------------------

  function conversationUrl(id) {
    return root.dataset.conversationUrl.replace("00000000-0000-0000-0000-000000000000",
      encodeURIComponent(id));
  }

  function alertHandoff(frame) {
    const box = $("#alerts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = "alert";
    item.setAttribute("role", "alert");
    const title = document.createElement("strong");
    title.textContent = "A customer asked for a human";
    const subject = document.createElement("span");
    subject.className = "alert__subject";
    subject.textContent = frame.subject || "";
    const open = document.createElement("a");
    open.href = conversationUrl(frame.conversation_id);
    open.textContent = "Open";
    open.className = "btn btn--primary";
    if ($("#pane")) {
      open.setAttribute("hx-get", open.href);
      open.setAttribute("hx-target", "#pane");
      open.setAttribute("hx-push-url", "true");
    }
    open.addEventListener("click", () => item.remove());
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "btn btn--quiet";
    dismiss.textContent = "Dismiss";
    dismiss.addEventListener("click", () => item.remove());
    item.append(title, subject, open, dismiss);
    box.prepend(item);
    htmx.process(item);
    while (box.children.length > 3) box.lastElementChild.remove();
    setTimeout(() => item.remove(), 60000);
    if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
      const note = new Notification("A customer asked for a human",
        { body: frame.subject || "", tag: "handoff-" + frame.conversation_id });
      note.onclick = () => {
        window.focus();
        location.href = open.href;
      };
    }
  }

  function setupNotifications() {
    const button = $("#notify-enable");
    if (!button || !("Notification" in window) || Notification.permission !== "default") return;
    button.hidden = false;
    button.addEventListener("click", () => {
      Notification.requestPermission().finally(() => (button.hidden = true));
    });
  }

  // --- Reply box: typing signal, Enter to send, drafts, canned replies ---------------------

  const canned = {
    items: [],
    index: 0,
    seq: 0,
    box: () => $("#canned"),
    open() {
      const box = this.box();
      return box && !box.hidden && this.items.length > 0;
    },
    hide() {
      this.items = [];
      const box = this.box();
      if (box) {
        box.hidden = true;
        box.replaceChildren();
      }
    },
    async update(textarea) {
      const match = /^\/(\S{0,40})$/.exec(textarea.value);
      const conv = $(".conv[data-canned-url]");
      if (!match || !conv) {
        this.hide();
        return;
      }
      const seq = ++this.seq;
      let data;
      try {
        const response = await fetch(conv.dataset.cannedUrl + "?q=" + encodeURIComponent(match[1]),
          { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!response.ok) return;
        data = await response.json();
      } catch {
        return;
      }
      if (seq !== this.seq) return; // a newer keystroke asked again
      this.items = data.replies || [];
      this.index = 0;
      this.render();
    },
    render() {
      const box = this.box();
      if (!box) return;
      box.replaceChildren();
      if (!this.items.length) {
        const none = document.createElement("p");
        none.className = "canned__none";
        none.textContent = "No canned reply starts with that.";
        box.append(none);
        box.hidden = false;
        return;
      }
      this.items.forEach((item, i) => {
        const option = document.createElement("button");
        option.type = "button";
        option.className = "canned__item";
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", String(i === this.index));
        const head = document.createElement("span");
        head.className = "canned__head";
        const key = document.createElement("strong");
        key.textContent = "/" + item.shortcut;
        head.append(key, " " + item.title);
        const preview = document.createElement("span");
        preview.className = "canned__preview";
        preview.textContent = item.text;
        option.append(head, preview);
        option.addEventListener("mousedown", (event) => event.preventDefault());
        option.addEventListener("click", () => this.choose(i));
        box.append(option);
      });
      box.hidden = false;
    },
    move(step) {
      this.index = (this.index + step + this.items.length) % this.items.length;
      this.render();
    },
    choose(i) {
      const textarea = $("#reply-text");
      const item = this.items[i];
      if (!textarea || !item) return;
      textarea.value = item.text;
      drafts[currentId()] = item.text;
      this.hide();
      textarea.focus();
      textarea.setSelectionRange(item.text.length, item.text.length);
    },
  };

  document.addEventListener("input", (event) => {
    const textarea = event.target;
    if (textarea.id !== "reply-text") return;
    const id = currentId();
    drafts[id] = textarea.value;
    const now = Date.now();
    if (id && textarea.value.trim() && !textarea.value.startsWith("/")
        && now - lastTypingSent > TYPING_EVERY_MS) {
      lastTypingSent = now;
      send({ type: "typing", conversation_id: id });
    }
    canned.update(textarea);
  });

  document.addEventListener("keydown", (event) => {
    const textarea = event.target;
    if (textarea.id !== "reply-text" || event.isComposing) return;
    if (canned.open()) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        canned.move(event.key === "ArrowDown" ? 1 : -1);
        return;
      }
      if (event.key === "Enter" || event.key === "Tab") {
        event.preventDefault();
        canned.choose(canned.index);
        return;
      }
      if (event.key === "Escape") {
        canned.hide();
        return;
      }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.altKey) {
      event.preventDefault();
      if (textarea.value.trim()) textarea.form.requestSubmit();
    }
  });

  // --- htmx glue ------------------------------------------------------------------------

  document.addEventListener("htmx:beforeRequest", (event) => {
    const target = event.detail.target;
    if (target && target.id === "pane") {
      const match = /\/c\/([0-9a-f-]{36})\//.exec(event.detail.requestConfig?.path || "");
      if (match) {
        opening = match[1];
        held = [];
        send({ type: "watch", conversation_id: opening });
      }
    }
    const elt = event.detail.elt;
    if (elt && elt.id !== "controls" && elt.closest?.("#controls")) actionError = null; // new action
    if (elt && elt.classList && elt.classList.contains("composer__form")) {
      drafts[currentId()] = ""; // sent: the server echoes the text back if it was refused
      canned.hide();
    }
  });

  document.addEventListener("cs:replied", (event) => {
    // The socket normally delivers the reply at once; if it missed it, fetch the transcript.
    const id = event.detail && event.detail.id;
    setTimeout(() => {
      const list = $("#transcript");
      if (list && id !== undefined && !findMessage(list, id)) refresh("#transcript", 0);
    }, 1500);
  });

  function afterSwap(event) {
    const target = event.detail.target || event.target;
    if (target && target.id === "pane") {
      showTyping(null);
      watchCurrent();
      const replay = opening === currentId() ? held : [];
      opening = null;
      held = [];
      replay.forEach(handle);
      const input = $("#inbox-current");
      if (input) input.value = currentId() || "";
      $(".desk")?.classList.toggle("desk--open", Boolean(currentId()));
      const list = $("#transcript");
      if (list) scrollToEnd(list);
    }
    if (target && target.id === "transcript") scrollToEnd(target);
    if (target && target.id === "controls") keepActionError();
    markCurrentRow();
    restoreDraft();
    localizeTimes();
    updateTitle();
  }
  document.addEventListener("htmx:afterSwap", afterSwap);
  document.addEventListener("htmx:oobAfterSwap", afterSwap);

  // A refused action's message ("Bea already holds this conversation") stays a few seconds
  // even if a live refresh of the controls comes right after it.
  function keepActionError() {
    const controls = $("#controls");
    const shown = $(".error", controls);
    if (shown) {
      actionError = { text: shown.textContent, id: currentId(), until: Date.now() + 8000 };
    } else if (actionError && actionError.id === currentId() && Date.now() < actionError.until
               && !$(".btn--primary", controls)) {
      const again = document.createElement("p");
      again.className = "error";
      again.setAttribute("role", "alert");
      again.textContent = actionError.text;
      controls.append(again);
    }
  }

  function restoreDraft() {
    const textarea = $("#reply-text");
    const draft = drafts[currentId()];
    if (textarea && !textarea.disabled && !textarea.value && draft) textarea.value = draft;
    if (textarea && !textarea.disabled && document.activeElement === document.body) {
      textarea.focus();
    }
  }

  function markCurrentRow() {
    const id = currentId();
    document.querySelectorAll("#inbox .row").forEach((row) => {
      row.classList.toggle("row--current", row.dataset.id === id);
    });
  }

  const baseTitle = document.title;
  function updateTitle() {
    const groups = $("#inbox .inbox__groups");
    const waiting = groups ? Number(groups.dataset.waiting || 0) : 0;
    const pane = $(".conv h1");
    const name = pane ? pane.textContent + " · Support console" : baseTitle;
    document.title = (waiting ? "(" + waiting + " waiting) " : "") + name;
  }

  // --- Times ------------------------------------------------------------------------------

  function relative(date) {
    const seconds = Math.max(0, (Date.now() - date.getTime()) / 1000);
    if (seconds < 60) return "now";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m";
    if (seconds < 86400) return Math.floor(seconds / 3600) + "h";
    return Math.floor(seconds / 86400) + "d";
  }

  function localizeTimes() {
    document.querySelectorAll("time[data-relative]").forEach((el) => {
      const date = new Date(el.dateTime);
      if (isNaN(date)) return;
      el.textContent = relative(date);
      el.title = date.toLocaleString();
    });
    document.querySelectorAll("time[data-local]").forEach((el) => {
      const date = new Date(el.dateTime);
      if (isNaN(date) || el.dataset.done) return;
      const today = date.toDateString() === new Date().toDateString();
      el.textContent = today ? clock(date) : date.toLocaleString([], {
        month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
      el.title = date.toLocaleString();
      el.dataset.done = "1";
    });
  }

  // --- Start --------------------------------------------------------------------------------

  localizeTimes();
  setInterval(localizeTimes, 30000);
  updateTitle();
  setupNotifications();
  const list = $("#transcript");
  if (list) scrollToEnd(list);
  connect();
})();
