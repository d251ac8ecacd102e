// The console's page is htmx partials (inbox, transcript, controls, tickets…) rendered by the
// server; socket events only say "this changed" and the partial is fetched again.

import { $ } from "./dom.js";

const scheduled = {};
// Partials whose own actions (take over, hand back, close…) re-render them with the outcome.
const SELF_RENDERING = new Set(["#controls", "#ticket-props"]);

/**
 * At most one refresh of a partial per `wait` ms, however many events ask for it. A partial
 * whose request is still under way (htmx would drop the trigger) is refreshed after it.
 */
export function refresh(selector, wait = 200) {
  if (!$(selector) || scheduled[selector]) return;
  scheduled[selector] = setTimeout(() => {
    scheduled[selector] = null;
    const element = $(selector);
    if (!element) return;
    if (element.classList.contains("htmx-request")) refresh(selector, 300);
    // An action under way inside re-renders the partial itself, after the change, with its
    // outcome (say, "Bea already holds this conversation"): a refresh now would only wipe
    // that message.
    else if (!(SELF_RENDERING.has(selector) && element.querySelector(".htmx-request"))) {
      htmx.trigger(element, "refresh");
    }
  }, wait);
}

/** Everything the socket may have missed while it was down. */
export const ALL_PARTIALS = ["#inbox", "#transcript", "#controls", "#conv-tickets", "#ticket-list",
  "#ticket-props", "#notes"];
