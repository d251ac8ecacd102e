// Small DOM helpers. Text only ever goes in as text nodes (textContent), never as HTML.

/** The first element matching `selector` (in `within`, else the document), or null. */
export const $ = (selector, within = document) => within.querySelector(selector);

/** An element with a class and text. */
export function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

/** A div with a class and text, appended to `parent`. */
export function addLine(parent, className, text) {
  const line = el("div", className, text);
  parent.append(line);
  return line;
}
