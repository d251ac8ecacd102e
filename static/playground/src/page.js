// The page's parts (templates/agents/playground.html) and each pane's state in the browser.

import { $ } from "./dom.js";

export const PANE_KEYS = ["a", "b"];

export function newTotals() {
  return { answers: 0, prompt: 0, completion: 0, ms: 0 };
}

/** key → pane. conversation: the pane's playground conversation once the server made one;
 * controller: the AbortController of the answer streaming into it. */
export function createPanes() {
  const panes = {};
  for (const key of PANE_KEYS) {
    panes[key] = { key, conversation: null, controller: null, totals: newTotals() };
  }
  return panes;
}

export const settingsForm = (key) => document.getElementById(key + "-settings");
export const transcript = (pane) => document.getElementById(pane.key + "-transcript");

/** A line in the status bar below the question box. */
export const say = (text) => {
  $("#pg-status").textContent = text;
};
