// Safe markdown for bot and agent answers, rendered incrementally while an answer streams.
//
// Model output is untrusted. This module never produces HTML: it turns text into trees of
// plain arrays, [tag, attributes or null, ...children], where a string child is text. dom.js
// builds elements from them with createElement/setAttribute/append, so a "<script>" in an
// answer stays the text "<script>". The only attribute values taken from the text are link
// targets, and only after new URL() accepted them as http(s) or mailto.
//
// What is understood (a deliberately small subset; anything else stays text):
//   blocks:  paragraphs, "# heading" (shown as a bold paragraph), "- item" / "1. item" lists,
//            ``` code fences, --- rules; a blank line ends a block.
//   inline:  `code`, **bold**, *italic*, [text](url), bare http(s)/mailto links, line breaks.

/** @typedef {[string, Object<string, string>|null, ...(string|Tree)[]]} Tree */

/** The URL as the browser will read it, if it is one a link may point to; else null. */
function safeHref(text) {
  try {
    const url = new URL(text);
    return /^(https?|mailto):$/.test(url.protocol) ? url.href : null;
  } catch {
    return null; // not an absolute URL
  }
}

/** A link that opens outside the host page and cannot reach back to it (window.opener). */
export function linkTree(href, children) {
  return ["a", { href, target: "_blank", rel: "noopener noreferrer" }, ...children];
}

// One alternative per inline construct; the capture groups, in order:
//   1 `code`   2 **bold**   3 *italic*   4,5 [text](url)   6 a bare URL   (else) a newline.
// A bare URL does not take trailing punctuation ("see https://x.example/a." ends before ".").
const INLINE = new RegExp(
  [
    /`([^`\n]+)`/,
    /\*\*(\S(?:[^]*?\S)?)\*\*/,
    /\*(\S(?:[^*]*?\S)?)\*/,
    /\[([^\]\n]+)\]\(\s*<?([^\s)>]+)>?\s*\)/,
    /(https?:\/\/[^\s<>"]*[^\s<>"'.,;:!?)\]}*]|mailto:[^\s<>"]+@[\w.-]*\w)/,
    /\n/,
  ].map((part) => part.source).join("|"),
  "g",
);

/**
 * Inline markdown of one block's text → children for its element.
 * @param {string} text
 * @param {boolean} [insideLink] true inside a link's text: no link within a link.
 * @returns {(string|Tree)[]}
 */
function parseInline(text, insideLink = false) {
  const out = [];
  const pattern = new RegExp(INLINE.source, "g"); // own lastIndex: this recurses
  let copied = 0;
  let match;
  while ((match = pattern.exec(text))) {
    const [whole, code, bold, italic, linkText, linkUrl, bareUrl] = match;
    let node = whole;
    let href;
    if (code) node = ["code", null, code];
    else if (bold) node = ["strong", null, ...parseInline(bold, insideLink)];
    else if (italic) node = ["em", null, ...parseInline(italic, insideLink)];
    else if (linkText) {
      node = !insideLink && (href = safeHref(linkUrl))
        ? linkTree(href, parseInline(linkText, true))
        : ["span", null, ...parseInline(linkText, true)]; // a refused target: the text alone
    } else if (bareUrl) node = !insideLink && (href = safeHref(bareUrl)) ? linkTree(href, [bareUrl]) : bareUrl;
    else node = ["br", null];
    if (match.index > copied) out.push(text.slice(copied, match.index));
    out.push(node);
    copied = pattern.lastIndex;
  }
  if (copied < text.length) out.push(text.slice(copied));
  return out;
}

const FENCE = /^\s*```/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const LIST_ITEM = /^\s*(?:[-*+•]|(\d{1,9})[.)])\s+(.*)$/;
const HEADING = /^\s*#{1,6}\s+(.*)$/;

/**
 * Reads lines one at a time into blocks. Blocks only ever grow at the end: a line either
 * extends the last block or starts a new one, and a block that is no longer last never changes
 * again. That is what lets a streamed answer render each finished block once.
 *
 * Block shapes: {kind: "code", lines} · {kind: "rule"} · {kind: "heading", text}
 *   · {kind: "paragraph", lines} · {kind: "list", ordered, start, items: [{lines}]}
 */
export class BlockParser {
  constructor() {
    /** Every block so far, in order. */
    this.blocks = [];
    /** The block (or list item) the next plain line continues; null after a blank line. */
    this.current = null;
    /** The list the next item joins, when the last block is a list still open. */
    this.list = null;
  }

  /**
   * One line, without its newline.
   * Starting a block never depends on what came before (except for lines inside a code
   * fence, which start nothing), so parsing may also begin at any block's first line.
   */
  addLine(line) {
    let match;
    if (this.current && this.current.kind === "code") {
      if (FENCE.test(line)) this.current = null;
      else this.current.lines.push(line);
    } else if (FENCE.test(line)) {
      this.start((this.current = { kind: "code", lines: [] }));
    } else if (!line.trim()) {
      this.current = null;
    } else if (RULE.test(line)) {
      this.start({ kind: "rule" });
      this.current = null;
    } else if ((match = LIST_ITEM.exec(line))) {
      const ordered = Boolean(match[1]);
      if (!this.list || this.list.ordered !== ordered) {
        this.start({ kind: "list", ordered, start: match[1], items: [] });
        this.list = this.blocks[this.blocks.length - 1];
      }
      this.list.items.push((this.current = { kind: "item", lines: [match[2]] }));
    } else if ((match = HEADING.exec(line))) {
      this.start({ kind: "heading", text: match[1] });
      this.current = null;
    } else if (this.current) {
      // A list item's continuation is indented in the source; the indent is not content.
      this.current.lines.push(this.current.kind === "item" ? line.trim() : line);
    } else {
      this.start((this.current = { kind: "paragraph", lines: [line] }));
    }
    if (!this.current) this.list = null; // a blank line (or a rule, heading…) ends a list
  }

  start(block) {
    this.blocks.push(block);
    if (block.kind !== "list") this.list = null;
  }
}

/** @returns {Tree} */
export function blockToTree(block) {
  switch (block.kind) {
    case "code":
      return ["pre", null, ["code", null, block.lines.join("\n")]];
    case "rule":
      return ["hr", null];
    case "heading":
      return ["p", null, ["strong", null, ...parseInline(block.text)]];
    case "list":
      return [
        block.ordered ? "ol" : "ul",
        block.start > 1 ? { start: block.start } : null, // "1." is where a list starts anyway
        ...block.items.map((item) => ["li", null, ...parseInline(item.lines.join("\n"))]),
      ];
    default:
      return ["p", null, ...parseInline(block.lines.join("\n"))];
  }
}

/**
 * Markdown that arrives in pieces (bot.delta frames). push() returns the blocks that became
 * final with this piece, to be appended once, and the blocks still open, to replace the
 * previous open ones. Each piece costs the size of the piece plus the open block's size,
 * not the whole answer so far (rendering everything on every delta made long answers
 * quadratic). The result is always exactly markdownToTrees() of all the text so far:
 * tests/widget/test_client_markdown.mjs checks that at every split point.
 */
export class MarkdownStream {
  constructor() {
    this.parser = new BlockParser();
    /** Complete lines of the last block (from its first line on): re-parsed for each piece. */
    this.openLines = [];
    /** Text after the last complete line, "\r\n" and "\r" already turned into "\n". */
    this.pending = "";
    /** How many of parser.blocks were returned as final already. */
    this.finalCount = 0;
  }

  /** @returns {{done: Tree[], open: Tree[]}} */
  push(text) {
    let pending = this.pending + text;
    // A "\r" at the very end may be the first half of a "\r\n" split across two pieces.
    const heldReturn = pending.endsWith("\r");
    if (heldReturn) pending = pending.slice(0, -1);
    pending = pending.replace(/\r\n?/g, "\n");
    const lastNewline = pending.lastIndexOf("\n");
    if (lastNewline >= 0) {
      for (const line of pending.slice(0, lastNewline).split("\n")) this.addLine(line);
      pending = pending.slice(lastNewline + 1);
    }
    this.pending = heldReturn ? pending + "\r" : pending;

    const blocks = this.parser.blocks;
    const done = [];
    while (this.finalCount < blocks.length - 1) done.push(blockToTree(blocks[this.finalCount++]));
    // The last block and the unfinished line, parsed afresh from the block's first line: the
    // same blocks as parsing everything (see BlockParser.addLine), without touching the
    // state the next piece continues from. A held "\r" counts as the line break it will be.
    const tail = new BlockParser();
    for (const line of this.openLines) tail.addLine(line);
    for (const line of this.pending.replace(/\r/g, "\n").split("\n")) tail.addLine(line);
    return { done, open: tail.blocks.map(blockToTree) };
  }

  addLine(line) {
    const before = this.parser.blocks.length;
    this.parser.addLine(line);
    if (this.parser.blocks.length > before) this.openLines = [line];
    else this.openLines.push(line);
  }
}

/** All of a text at once (history, agent messages, the greeting). @returns {Tree[]} */
export function markdownToTrees(text) {
  const { done, open } = new MarkdownStream().push(String(text));
  return [...done, ...open];
}
