// Times drawn by the server in UTC, shown in the agent's locale and zone:
// time[data-relative] as "5m", "2h"…; time[data-local] as a clock time (or date and time).

import { clock } from "./dom.js";

function relative(date) {
  const seconds = Math.max(0, (Date.now() - date.getTime()) / 1000);
  if (seconds < 60) return "now";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h";
  return Math.floor(seconds / 86400) + "d";
}

export function localizeTimes() {
  document.querySelectorAll("time[data-relative]").forEach((element) => {
    const date = new Date(element.dateTime);
    if (isNaN(date)) return;
    element.textContent = relative(date);
    element.title = date.toLocaleString();
  });
  document.querySelectorAll("time[data-local]").forEach((element) => {
    const date = new Date(element.dateTime);
    if (isNaN(date) || element.dataset.done) return;
    const today = date.toDateString() === new Date().toDateString();
    element.textContent = today ? clock(date) : date.toLocaleString([], {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    element.title = date.toLocaleString();
    element.dataset.done = "1";
  });
}
