// The session: one pane or two side by side, a new session, and the export link (built from
// the panes' conversations as the server stored them).

import { $ } from "./dom.js";
import { renderTotals } from "./figures.js";
import { newTotals, PANE_KEYS, say, transcript } from "./page.js";

/** Wires the bar's tools; returns what asking needs of the session:
 * {shownPanes(): the panes a question goes to, updateExport(): after a pane got its
 * conversation}. */
export function setupSession(root, panes) {
  const compare = $("#pg-compare");
  const exportLink = $("#pg-export");

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
    $("#pg-message").focus();
  });

  return {
    shownPanes: () => (compare.checked ? PANE_KEYS : ["a"]).map((key) => panes[key]),
    updateExport,
  };
}
