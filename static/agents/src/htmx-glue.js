// What happens around htmx requests and swaps: the pane opening a conversation, drafts,
// refused actions' messages, the current row, the tab title.

import { restoreDraft, canned, drafts } from "./composer.js";
import { $, currentId, el } from "./dom.js";
import { finishOpening, startOpening, watchCurrent } from "./events.js";
import { refresh } from "./partials.js";
import { localizeTimes } from "./times.js";
import { findMessage, scrollToEnd, showTyping } from "./transcript.js";

const ACTION_ERROR_KEPT_MS = 8000;
const REPLY_ECHO_WITHIN_MS = 1500;
let actionError = null; // see keepActionError
const baseTitle = document.title;

function beforeRequest(event) {
  const target = event.detail.target;
  if (target && target.id === "pane") {
    const match = /\/c\/([0-9a-f-]{36})\//.exec(event.detail.requestConfig?.path || "");
    if (match) startOpening(match[1]);
  }
  const source = event.detail.elt;
  if (source && source.id !== "controls" && source.closest?.("#controls")) actionError = null; // a new action
  if (source && source.classList && source.classList.contains("composer__form")) {
    drafts[currentId()] = ""; // sent: the server echoes the text back if it was refused
    canned.hide();
  }
}

function afterSwap(event) {
  const target = event.detail.target || event.target;
  if (target && target.id === "pane") {
    showTyping(null);
    watchCurrent();
    finishOpening();
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

// A refused action's message ("Bea already holds this conversation") stays a few seconds
// even if a live refresh of the controls comes right after it.
function keepActionError() {
  const controls = $("#controls");
  const shown = $(".error", controls);
  if (shown) {
    actionError = { text: shown.textContent, id: currentId(), until: Date.now() + ACTION_ERROR_KEPT_MS };
  } else if (actionError && actionError.id === currentId() && Date.now() < actionError.until
             && !$(".btn--primary", controls)) {
    const again = el("p", "error", actionError.text);
    again.setAttribute("role", "alert");
    controls.append(again);
  }
}

function markCurrentRow() {
  const id = currentId();
  document.querySelectorAll("#inbox .row").forEach((row) => {
    row.classList.toggle("row--current", row.dataset.id === id);
  });
}

/** "(2 waiting) Customer name · Support console" */
export function updateTitle() {
  const groups = $("#inbox .inbox__groups");
  const waiting = groups ? Number(groups.dataset.waiting || 0) : 0;
  const pane = $(".conv h1");
  const name = pane ? pane.textContent + " · Support console" : baseTitle;
  document.title = (waiting ? "(" + waiting + " waiting) " : "") + name;
}

/**
 * htmx wires up swapped-in content only when the swap settles, 20 ms later. A form submitted
 * in between (Enter just as a live refresh re-rendered the reply box) would go the browser's
 * own way, a GET of this page with the text in its address, and the reply would be lost. So a
 * submit wires its form first (htmx.process does nothing to a form it has wired already); the
 * capture phase comes before the form's own listeners, so htmx takes this very submit.
 */
function wireBeforeSubmit(event) {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.matches("[hx-post], [hx-get]")) htmx.process(form);
}

export function setupHtmxGlue() {
  document.addEventListener("submit", wireBeforeSubmit, true);
  document.addEventListener("htmx:beforeRequest", beforeRequest);
  document.addEventListener("htmx:afterSwap", afterSwap);
  document.addEventListener("htmx:oobAfterSwap", afterSwap);
  document.addEventListener("cs:replied", (event) => {
    // The socket normally delivers the reply at once; if it missed it, fetch the transcript.
    const id = event.detail && event.detail.id;
    setTimeout(() => {
      const list = $("#transcript");
      if (list && id !== undefined && !findMessage(list, id)) refresh("#transcript", 0);
    }, REPLY_ECHO_WITHIN_MS);
  });
}
