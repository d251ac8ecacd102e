// Small DOM helpers shared by the console's modules.

/** The first element matching `selector` (in `within`, else the document), or null. */
export const $ = (selector, within = document) => within.querySelector(selector);

/** The id of the conversation open in the pane, or null. */
export function currentId() {
  const conversation = $(".conv[data-conversation-id]");
  return conversation ? conversation.dataset.conversationId : null;
}

/** An element with a class and text (text only ever as a text node). */
export function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

/** hh:mm in the agent's locale. */
export function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
