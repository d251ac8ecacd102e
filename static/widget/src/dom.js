// Building elements. Text is only ever added as text nodes (append of a string), never as
// HTML, so customer, agent and model text cannot inject markup.

/**
 * h("button", {class: "sm", onclick: fn}, "Send") → <button class="sm">Send</button>.
 * Attributes: null/undefined/false are left out, true is an empty attribute, "on…" keys add
 * event listeners. Children: strings (text), nodes, or trees [tag, attrs, ...children] such as
 * markdown.js produces; null/undefined/false children are skipped.
 */
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const name in attrs || {}) {
    const value = attrs[name];
    if (value == null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child == null || child === false) continue;
    element.append(Array.isArray(child) ? h(...child) : child);
  }
  return element;
}

/** Elements for markdown trees (markdown.js). */
export const buildTrees = (trees) => trees.map((tree) => h(...tree));
