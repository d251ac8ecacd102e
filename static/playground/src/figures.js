// An answer's figures (tokens, timings, finish) under it, and each pane's running totals.

import { $, addLine, el } from "./dom.js";
import { scrollToEnd } from "./transcript.js";

// Completion tokens over the time from the first token to the end (the whole answer's
// time when that is unknown): agents/playground/selectors.py's tokens_per_second, for the
// export.
function tokensPerSecond(completion, ttftMs, totalMs) {
  if (!completion || !totalMs) return null;
  const span = ttftMs != null && totalMs > ttftMs ? totalMs - ttftMs : totalMs;
  return Math.round((completion * 10000) / span) / 10;
}

const duration = (ms) => (ms == null ? "—" : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`);

/** The bot.done frame `done` shown under `answer` (dl.pg-figures: [data-figure] > dt, dd
 * with the raw value in data-value), and added to the pane's totals. */
export function showFigures(pane, answer, done) {
  const usage = done.usage || { prompt_tokens: 0, completion_tokens: 0 };
  const speed = tokensPerSecond(usage.completion_tokens, done.ttft_ms, done.total_ms);
  const figures = [
    ["prompt_tokens", "Prompt", usage.prompt_tokens, `${usage.prompt_tokens} tokens`],
    ["completion_tokens", "Completion", usage.completion_tokens, `${usage.completion_tokens} tokens`],
    ["ttft_ms", "First token", done.ttft_ms, duration(done.ttft_ms)],
    ["tokens_per_second", "Speed", speed, speed == null ? "—" : `${speed} tokens/s`],
    ["total_ms", "Total", done.total_ms, duration(done.total_ms)],
    ["finish_reason", "Finish", done.finish_reason, done.finish_reason],
  ];
  const guards = Array.isArray(done.guards) ? done.guards.join(", ") : "";
  if (guards) figures.push(["guards", "Guards", guards, guards]);
  const list = el("dl", "pg-figures");
  for (const [key, label, raw, shown] of figures) {
    const figure = el("div");
    figure.dataset.figure = key;
    const value = el("dd", "", shown);
    value.dataset.value = raw == null ? "" : String(raw);
    figure.append(el("dt", "", label), value);
    list.append(figure);
  }
  answer.append(list);
  if (done.fallback) addLine(answer, "pg-msg__flag", "Fallback rules answered: the model was unavailable or too slow.");
  else if (done.partial) addLine(answer, "pg-msg__flag", "Cut off: partial answer.");
  pane.totals.answers += 1;
  pane.totals.prompt += usage.prompt_tokens || 0;
  pane.totals.completion += usage.completion_tokens || 0;
  pane.totals.ms += done.total_ms || 0;
  renderTotals(pane);
  scrollToEnd(pane);
}

export function renderTotals(pane) {
  const t = pane.totals;
  $(`#${pane.key}-totals`).textContent = t.answers
    ? `${t.answers} answer${t.answers === 1 ? "" : "s"} · ${t.prompt} prompt + ${t.completion} completion tokens · ${duration(t.ms)} in all`
    : "No answers yet.";
}
