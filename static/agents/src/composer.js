// The reply box: drafts kept per conversation across re-renders, the "agent is typing"
// signal, Enter to send, and canned replies ("/shortcut" opens a list to pick from).

import { createThrottle, TYPING_EVERY_MS } from "../../shared/src/throttle.js";
import { $, currentId, el } from "./dom.js";
import { send } from "./socket.js";

/** Conversation id → reply text not sent yet. */
export const drafts = {};
const typingThrottle = createThrottle(TYPING_EVERY_MS);

export const canned = {
  items: [],
  index: 0,
  requests: 0, // answers to older keystrokes are ignored
  box: () => $("#canned"),
  isOpen() {
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
    const conversation = $(".conv[data-canned-url]");
    if (!match || !conversation) {
      this.hide();
      return;
    }
    const request = ++this.requests;
    let data;
    try {
      const response = await fetch(conversation.dataset.cannedUrl + "?q=" + encodeURIComponent(match[1]),
        { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      data = await response.json();
    } catch {
      return;
    }
    if (request !== this.requests) return; // a newer keystroke asked again
    this.items = data.replies || [];
    this.index = 0;
    this.render();
  },
  render() {
    const box = this.box();
    if (!box) return;
    box.replaceChildren();
    if (!this.items.length) {
      box.append(el("p", "canned__none", "No canned reply starts with that."));
      box.hidden = false;
      return;
    }
    this.items.forEach((item, i) => {
      const option = el("button", "canned__item");
      option.type = "button";
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", String(i === this.index));
      const head = el("span", "canned__head");
      head.append(el("strong", "", "/" + item.shortcut), " " + item.title);
      option.append(head, el("span", "canned__preview", item.text));
      option.addEventListener("mousedown", (event) => event.preventDefault()); // keep focus
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

function onInput(event) {
  const textarea = event.target;
  if (textarea.id !== "reply-text") return;
  const id = currentId();
  drafts[id] = textarea.value;
  // A "/shortcut" being typed is not a reply being written.
  if (id && textarea.value.trim() && !textarea.value.startsWith("/") && typingThrottle()) {
    send({ type: "typing", conversation_id: id });
  }
  canned.update(textarea);
}

function onKeydown(event) {
  const textarea = event.target;
  if (textarea.id !== "reply-text" || event.isComposing) return;
  if (canned.isOpen()) {
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
  // Enter sends; Shift+Enter (or Alt+Enter) is a new line.
  if (event.key === "Enter" && !event.shiftKey && !event.altKey) {
    event.preventDefault();
    if (textarea.value.trim()) textarea.form.requestSubmit();
  }
}

/** The reply box is re-rendered by htmx: listen on the document, not on the box. */
export function setupComposer() {
  document.addEventListener("input", onInput);
  document.addEventListener("keydown", onKeydown);
}

/** After a re-render: the draft back in the box, and the focus if nothing else has it. */
export function restoreDraft() {
  const textarea = $("#reply-text");
  const draft = drafts[currentId()];
  if (textarea && !textarea.disabled && !textarea.value && draft) textarea.value = draft;
  if (textarea && !textarea.disabled && document.activeElement === document.body) {
    textarea.focus();
  }
}
