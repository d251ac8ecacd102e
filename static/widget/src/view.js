// The chat panel's DOM: building it, and the pieces the conversation adds to it (messages,
// answers with their sources and thumbs, cards). No protocol or state here: the controller
// (controller.js) decides, this module draws. Class names, roles and ARIA attributes are
// what assistive technology and tests/e2e rely on: change them only together.

import { buildTrees, h } from "./dom.js";
import { ICONS } from "./icons.js";
import { linkTree, MarkdownStream } from "./markdown.js";

const STICK_WITHIN_PX = 60; // a reader this close to the end keeps seeing new messages
const MAX_COMMENT_CHARS = 1000; // as the server's feedback and CSAT comments
const MAX_FIELDS = 6; // an action card's key/value rows
const FAILED = /^(error|timeout|bad_response|refused)$/; // action statuses shown as a notice

/** An http(s) URL as the browser reads it, else null (sources are links to web pages only). */
function webHref(text) {
  try {
    const url = new URL(String(text));
    return /^https?:$/.test(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

export class PanelView {
  /**
   * @param {object} ctx what embed.js passes to mount(): shadow root, launcher, config…
   * @param {object} strings i18n.js strings of the visitor's language
   * @param {object} actions the controller's handlers: submit(text), handoff(), endChat(),
   *   minimise(), typed(), rate(bubble, rating), comment(bubble, text), csat(score, comment),
   *   contact(email), act(type, callId) (an action card's Confirm or Cancel)
   */
  constructor(ctx, strings, actions) {
    this.ctx = ctx;
    this.strings = strings;
    this.actions = actions;
    const t = strings;
    const name = String(ctx.cfg.name || "");
    const menuItem = (label, action) =>
      h("button", { type: "button", role: "menuitem", onclick: () => { this.showMenu(false); action(); } }, label);

    this.status = h("span", { class: "st", role: "status" });
    this.menu = h("div", { class: "mn", role: "menu", hidden: true },
      menuItem(t.talkToHuman, actions.handoff), menuItem(t.endChat, actions.endChat));
    this.menuButton = h("button", {
      type: "button", class: "ib", "aria-label": t.moreOptions, "aria-haspopup": "menu",
      "aria-expanded": "false", onclick: () => this.showMenu(this.menu.hidden),
    }, ctx.icon(ICONS.more));
    this.log = h("ol", { class: "lg", role: "log", "aria-live": "polite", "aria-label": t.conversation });
    this.typingDots = h("div", { class: "ty", "aria-hidden": "true", hidden: true }, h("i"), h("i"), h("i"));
    this.scroller = h("div", { class: "sc" }, this.log, this.typingDots);
    this.errorBar = h("div", { class: "er", role: "alert", hidden: true });
    this.input = h("textarea", {
      rows: 1, maxlength: 4000, "aria-label": t.messageLabel, placeholder: t.messagePlaceholder,
      enterkeyhint: "send",
    });
    this.humanButton = h("button", { type: "button", class: "hb", onclick: actions.handoff }, t.talkToHuman);
    this.panel = h("div", { class: "p", id: "csd-panel", role: "dialog", "aria-label": t.chatWith(name), hidden: true },
      h("div", { class: "hd" },
        h("div", { class: "ht" }, h("strong", null, name), this.status),
        this.menuButton,
        h("button", { type: "button", class: "ib", "aria-label": t.minimise, onclick: actions.minimise },
          ctx.icon(ICONS.minimise)),
        this.menu),
      this.scroller, this.errorBar, this.humanButton,
      h("form", { class: "f", onsubmit: (event) => this.submit(event) },
        this.input, h("button", { class: "sb", "aria-label": t.send }, ctx.icon(ICONS.send))));
    ctx.w.append(this.panel);
    ctx.btn.setAttribute("aria-controls", "csd-panel");
    this.listen();
  }

  listen() {
    const { panel, menu, input } = this;
    this.ctx.btn.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.actions.minimise();
    });
    // Keys typed in the widget are ours: the host page's shortcuts must not see them.
    for (const type of ["keydown", "keyup", "keypress"]) {
      panel.addEventListener(type, (event) => event.stopPropagation());
    }
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        if (!menu.hidden) {
          this.showMenu(false);
          this.menuButton.focus();
        } else {
          this.actions.minimise();
        }
      } else if (!menu.hidden && /^Arrow(Up|Down)$/.test(event.key)) {
        // The menu's items are a ring: Down after the last is the first.
        const items = [...menu.children];
        const at = items.indexOf(this.ctx.sr.activeElement);
        items[(at + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
        event.preventDefault();
      }
    });
    panel.addEventListener("click", (event) => {
      if (!menu.hidden && !menu.contains(event.target) && !this.menuButton.contains(event.target)) {
        this.showMenu(false);
      }
    });
    input.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter is a new line; Enter that confirms an IME candidate is neither.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) this.submit(event);
    });
    input.addEventListener("input", () => {
      this.fitInput();
      this.actions.typed();
    });
  }

  submit(event) {
    event.preventDefault();
    const text = this.input.value.trim();
    if (!text) return;
    this.input.value = "";
    this.fitInput();
    this.actions.submit(text);
  }

  /** The message box grows with its text up to a few lines, then scrolls. */
  fitInput() {
    const { input } = this;
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 120) + "px";
  }

  showMenu(open) {
    this.menu.hidden = !open;
    this.menuButton.setAttribute("aria-expanded", String(open));
    if (open) this.menu.firstChild.focus();
  }

  // --- Panel and launcher ---------------------------------------------------------------

  setOpen(open) {
    this.panel.hidden = !open;
    this.ctx.w.classList.toggle("o", open);
    if (!open) this.showMenu(false);
  }

  /** The launcher shows a close arrow while open, else the chat icon and the unread count. */
  drawLauncher(open, unread) {
    const { btn, icon, CHAT } = this.ctx;
    const t = this.strings;
    btn.replaceChildren(icon(open ? ICONS.minimise : CHAT), unread ? h("b", { "aria-hidden": "true" }, String(unread)) : "");
    btn.setAttribute("aria-label", open ? t.closeChat : t.openChat + (unread ? " (" + t.unread(unread) + ")" : ""));
    btn.setAttribute("aria-expanded", String(open));
  }

  setConnectionState(state) {
    this.status.dataset.s = state;
    this.status.textContent = this.strings[state];
  }

  setTypingDots(visible) {
    this.typingDots.hidden = !visible;
    if (visible && this.atBottom()) this.scrollToEnd();
  }

  /** Hiding the focused button would drop focus out of the widget: it goes to the input. */
  showHumanButton(visible) {
    if (!visible && this.ctx.sr.activeElement === this.humanButton) this.input.focus();
    this.humanButton.hidden = !visible;
  }

  showError(text) {
    this.errorBar.textContent = text;
    this.errorBar.hidden = !text;
  }

  // --- The log --------------------------------------------------------------------------

  atBottom() {
    const { scroller } = this;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < STICK_WITHIN_PX;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  /** Adds to the log; follows it down if the reader was at the end (or `follow`). */
  add(element, follow = false) {
    const stick = follow || this.atBottom();
    this.log.append(element);
    if (stick) this.scrollToEnd();
    return element;
  }

  /** Runs a change to what is on screen, keeping a reader at the end there. */
  keepAtBottom(change) {
    const stick = this.atBottom();
    change();
    if (stick) this.scrollToEnd();
  }

  clearLog() {
    this.log.replaceChildren();
  }

  systemLine(text) {
    return this.add(h("li", { class: "sy" }, text));
  }

  replaceWithSystemLine(element, text) {
    element.replaceWith(h("li", { class: "sy" }, text));
  }

  /** A customer message; `pendingLabel` marks one not yet acknowledged by the server. */
  customerMessage(text, pendingLabel) {
    const li = h("li", { class: "m c" }, text);
    if (pendingLabel) {
      li.classList.add("pd");
      li.append(h("small", null, pendingLabel));
    }
    return li;
  }

  /** The label under a pending message ("Sending…", "Not sent yet…"), or its refusal. */
  setPendingLabel(li, text) {
    li.lastChild.textContent = text;
  }

  acknowledged(li) {
    li.classList.remove("pd");
    li.lastChild.remove();
  }

  /**
   * A bot or agent message, rendered as markdown. `write(text)` appends streamed text:
   * finished blocks are drawn once, only the open one is drawn again (markdown.js).
   */
  answer(id, text, author) {
    const body = h("div");
    const li = h("li", { class: "m b" }, author ? h("span", { class: "who" }, author) : "", body);
    let stream = new MarkdownStream();
    let openNodes = [];
    const bubble = {
      id, li, text: "",
      write: (more) => {
        bubble.text += more;
        const { done, open } = stream.push(more);
        for (const node of openNodes) node.remove();
        openNodes = buildTrees(open);
        body.append(...buildTrees(done), ...openNodes);
        li.hidden = !bubble.text; // an answer that has not started yet takes no room
      },
      /** The whole text anew (bot.start `replace`: a guard changed the answer). */
      rewrite: (text) => {
        body.replaceChildren();
        stream = new MarkdownStream();
        openNodes = [];
        bubble.text = "";
        bubble.write(text);
      },
    };
    bubble.write(text);
    this.add(li);
    return bubble;
  }

  /**
   * Links to the help articles an answer drew on (bot.done `sources`). The title is text; the
   * URL becomes the link only if it is http(s), else the title stands alone.
   */
  sources(bubble, sources) {
    const items = (Array.isArray(sources) ? sources : [])
      .filter((source) => source && typeof source === "object" && (source.title || source.url))
      .map((source) => {
        const href = webHref(source.url);
        const title = String(source.title || source.url);
        return h("li", null, href ? linkTree(href, [title]) : title);
      });
    if (!items.length || bubble.sourceList) return;
    bubble.sourceList = h("div", { class: "src" }, h("span", null, this.strings.sources), h("ul", null, ...items));
    this.keepAtBottom(() => bubble.li.append(bubble.sourceList));
  }

  /** The end of an answer: a note if it was cut off, then the thumbs. */
  finishAnswer(bubble, rating, cutOff) {
    const t = this.strings;
    const { li } = bubble;
    li.setAttribute("aria-busy", "false");
    if (cutOff) li.append(h("span", { class: "nt" }, t.answerCutOff));
    const thumb = (value, label) => h("button", {
      type: "button", class: "th", "aria-label": label, "aria-pressed": String(rating === value),
      onclick: () => this.actions.rate(bubble, value),
    }, this.ctx.icon(ICONS.thumb));
    li.append(h("div", { class: "fb" }, (bubble.thumbUp = thumb("up", t.helpful)),
      (bubble.thumbDown = thumb("down", t.notHelpful))));
  }

  showRating(bubble, rating) {
    bubble.thumbUp.setAttribute("aria-pressed", String(rating === "up"));
    bubble.thumbDown.setAttribute("aria-pressed", String(rating === "down"));
  }

  /** After a thumb: an optional comment, once per answer. */
  askComment(bubble) {
    if (bubble.commentForm) return;
    const t = this.strings;
    const box = h("textarea", { rows: 2, maxlength: MAX_COMMENT_CHARS, "aria-label": t.tellUsMore, placeholder: t.tellUsMore });
    bubble.commentForm = h("form", {
      class: "cm",
      onsubmit: (event) => {
        event.preventDefault();
        const text = box.value.trim();
        if (text) this.actions.comment(bubble, text.slice(0, MAX_COMMENT_CHARS));
        bubble.commentForm.replaceWith(h("span", { class: "nt" }, t.feedbackThanks));
      },
    }, box, h("button", { class: "sm" }, t.sendFeedback));
    bubble.li.append(bubble.commentForm);
    box.focus();
    if (this.atBottom()) this.scrollToEnd();
  }

  /** The satisfaction card: five stars and an optional comment. Returns its list item. */
  csatCard(onSent) {
    const t = this.strings;
    let score = 0;
    const stars = [1, 2, 3, 4, 5].map((n) => h("button", {
      type: "button", class: "sr", "aria-label": t.stars(n), "aria-pressed": "false",
      onclick: () => {
        score = n;
        stars.forEach((star, i) => {
          star.classList.toggle("on", i < n);
          star.setAttribute("aria-pressed", String(i + 1 === n));
        });
        submit.disabled = false;
      },
    }, "★"));
    const comment = h("textarea", { rows: 2, maxlength: MAX_COMMENT_CHARS, "aria-label": t.tellUsMore, placeholder: t.tellUsMore });
    const submit = h("button", { class: "sm", disabled: true }, t.submit);
    return this.add(h("li", { class: "cl" }, h("form", {
      class: "cs",
      onsubmit: (event) => {
        event.preventDefault();
        if (!score) return;
        this.actions.csat(score, comment.value.trim().slice(0, MAX_COMMENT_CHARS));
        submit.disabled = true;
        onSent();
      },
    }, h("p", null, t.csatQuestion), h("div", { role: "group", "aria-label": t.csatQuestion }, ...stars), comment, submit)), true);
  }

  /**
   * A call to the company's back end (frame `action`): a card, drawn again in place as the
   * call moves on (confirm_required → confirmed → ok…). Returns {li, draw(frame)}.
   */
  actionCard() {
    const t = this.strings;
    const li = this.add(h("li", { class: "ac", tabindex: -1 }));
    const str = (value) => (value == null || typeof value === "object" ? "" : String(value));
    const draw = (frame) => {
      const status = str(frame.status);
      const asked = /^confirm/.test(status); // confirm_required, confirmed
      const fields = status === "ok" && frame.fields && typeof frame.fields === "object"
        ? Object.entries(frame.fields).filter(([, value]) => str(value)).slice(0, MAX_FIELDS) : [];
      const button = (label, type) => h("button", {
        type: "button", class: "sm",
        onclick: () => {
          li.focus(); // before the buttons are disabled, so that the keyboard's place stays
          for (const b of buttons) b.disabled = true;
          if (type === "confirm") confirm.textContent = t.confirming;
          this.actions.act("action." + type, frame.call_id);
        },
      }, label);
      const buttons = status === "confirm_required" ? [button(t.confirm, "confirm"), button(t.cancel, "cancel")] : [];
      const [confirm] = buttons;
      // A redraw removes the focused button: the card keeps the focus, not the page.
      const hadFocus = li.contains(this.ctx.sr.activeElement);
      li.dataset.s = status;
      li.classList.toggle("x", FAILED.test(status));
      li.replaceChildren(...[
        h("span", { class: "who" }, str(frame.label) || t.lookedUp),
        h("div", null, (asked && str(frame.confirm_text)) || str(frame.text) || str(frame.confirm_text)),
        fields.length > 0 && h("dl", null, ...fields.flatMap(([key, value]) =>
          [h("dt", null, (key.charAt(0).toUpperCase() + key.slice(1)).replace(/_/g, " ")), h("dd", null, str(value))])),
        status === "confirmed" && h("span", { class: "nt" }, t.confirming),
        status === "cancelled" && h("span", { class: "nt" }, t.cancelled),
        buttons.length > 0 && h("div", null, ...buttons),
      ].filter(Boolean));
      if (hadFocus) li.focus({ preventScroll: true });
    };
    return { li, draw };
  }

  /** Nobody can answer live: ask for an e-mail address to follow up. */
  contactCard() {
    const t = this.strings;
    const email = h("input", { type: "email", required: true, "aria-label": t.email, placeholder: t.email });
    const card = this.add(h("li", { class: "cl" }, h("form", {
      class: "cs",
      onsubmit: (event) => {
        event.preventDefault();
        this.actions.contact(email.value.trim());
        card.remove();
      },
    }, h("p", null, t.askEmail), email, h("button", { class: "sm" }, t.submit))), true);
    email.focus();
  }
}
