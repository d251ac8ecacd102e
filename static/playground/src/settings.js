// The panes' settings forms (htmx partials, _playground_settings.html): what htmx does not do.

import { $ } from "./dom.js";
import { say, settingsForm } from "./page.js";

export function setupSettings() {
  syncSliders();
  // The settings are never submitted as a page (Enter in a text box would do that).
  document.addEventListener("submit", (event) => {
    if (event.target.matches(".pg-settings")) event.preventDefault();
  });
  fillZones();
  document.addEventListener("htmx:afterSettle", () => {
    fillZones();
    showNewParts();
  });
  // On a narrow screen the settings start folded, so the answers are in sight.
  if (window.matchMedia("(max-width: 1000px)").matches) {
    document.querySelectorAll(".pg-pane__settings").forEach((details) => { details.open = false; });
  }
  document.addEventListener("click", copySettings);
}

// A slider and its number box move together; the browser keeps the slider within its
// min, max and step, and the box shows what the slider made of a typed value once left.
function syncSliders() {
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
}

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

// Fields "Copy settings from A" leaves alone: the form's own, and the save step's.
const NOT_COPIED = ["pane", "csrfmiddlewaretoken", "target", "new_name"];

// "Copy settings from A": B starts from A's values, to change only what is compared.
function copySettings(event) {
  const button = event.target.closest && event.target.closest("[data-copy-from]");
  if (!button) return;
  const from = settingsForm(button.dataset.copyFrom);
  const to = settingsForm(button.dataset.copyTo);
  for (const source of from.elements) {
    if (!source.name || NOT_COPIED.includes(source.name)) continue;
    const target = to.elements.namedItem(source.name);
    if (!target || target instanceof RadioNodeList) continue;
    if (source.type === "range") target.max = source.max; // the profile's max_tokens
    target.value = source.value;
    target.dispatchEvent(new Event("input", { bubbles: true }));
  }
  say("Pane B has pane A's settings.");
}

/** The settings an answer was asked with, in one line above it. */
export function settingsSummary(form) {
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
