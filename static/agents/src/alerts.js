// "A customer asked for a human": an alert on the page (at most three, each for a minute)
// and, while the console's tab is in the background, a desktop notification.

import { $, el } from "./dom.js";

const MAX_ALERTS = 3;
const ALERT_SHOWN_MS = 60000;
const PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"; // in data-conversation-url

function conversationUrl(root, id) {
  return root.dataset.conversationUrl.replace(PLACEHOLDER_ID, encodeURIComponent(id));
}

/** console.handoff for a conversation other than the open one. */
export function alertHandoff(root, frame) {
  const box = $("#alerts");
  if (!box) return;
  const item = el("div", "alert");
  item.setAttribute("role", "alert");
  const open = el("a", "btn btn--primary", "Open");
  open.href = conversationUrl(root, frame.conversation_id);
  if ($("#pane")) {
    // In the inbox: open it in the pane, as a click on its row would.
    open.setAttribute("hx-get", open.href);
    open.setAttribute("hx-target", "#pane");
    open.setAttribute("hx-push-url", "true");
  }
  open.addEventListener("click", () => item.remove());
  const dismiss = el("button", "btn btn--quiet", "Dismiss");
  dismiss.type = "button";
  dismiss.addEventListener("click", () => item.remove());
  item.append(el("strong", "", "A customer asked for a human"),
    el("span", "alert__subject", frame.subject || ""), open, dismiss);
  box.prepend(item);
  htmx.process(item);
  while (box.children.length > MAX_ALERTS) box.lastElementChild.remove();
  setTimeout(() => item.remove(), ALERT_SHOWN_MS);
  if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
    const note = new Notification("A customer asked for a human",
      { body: frame.subject || "", tag: "handoff-" + frame.conversation_id });
    note.onclick = () => {
      window.focus();
      location.href = open.href;
    };
  }
}

/** The "Enable notifications" button, while the browser has not been asked yet. */
export function setupNotifications() {
  const button = $("#notify-enable");
  if (!button || !("Notification" in window) || Notification.permission !== "default") return;
  button.hidden = false;
  button.addEventListener("click", () => {
    Notification.requestPermission().finally(() => (button.hidden = true));
  });
}
