// The widget's incremental markdown (static/widget/src/markdown.js) against the renderer it
// replaced, which parsed the whole answer again on every delta. Run by
// tests/widget/test_client_markdown.py (`node tests/widget/test_client_markdown.mjs`); exits 1
// on a failure.
//
// Checked for every text of the corpus:
//   1. all at once, the new parser gives exactly the old renderer's trees;
//   2. streamed in pieces (every split into two, one character at a time, random pieces),
//      the blocks it hands out (final ones once, then the open ones) are the same trees,
//      and after every piece what is on screen equals the old renderer of the text so far;
//   3. a final block is never handed out twice, and the work per piece does not grow with
//      the answer (the quadratic re-parse is gone).

import assert from "node:assert/strict";
import { BlockParser, MarkdownStream, markdownToTrees } from "../../static/widget/src/markdown.js";

// ---- The renderer before incremental rendering (static/widget/widget.js at b5e8b48), verbatim.
const href = (u) => {
  try {
    const x = new URL(u);
    return /^(https?|mailto):$/.test(x.protocol) ? x.href : null;
  } catch (e) {
    return null;
  }
};
const A = (h, kids) => ["a", { href: h, target: "_blank", rel: "noopener noreferrer" }, ...kids];
const INL = /`([^`\n]+)`|\*\*(\S(?:[^]*?\S)?)\*\*|\*(\S(?:[^*]*?\S)?)\*|\[([^\]\n]+)\]\(\s*<?([^\s)>]+)>?\s*\)|(https?:\/\/[^\s<>"]*[^\s<>"'.,;:!?)\]}*]|mailto:[^\s<>"]+@[\w.-]*\w)|\n/g;
const inl = (s, noLink) => {
  const out = [], re = new RegExp(INL.source, "g");
  let i = 0, m;
  while ((m = re.exec(s))) {
    const [all, code, b, it, lt, lu, url] = m;
    let n = all, h;
    if (code) n = ["code", null, code];
    else if (b) n = ["strong", null, ...inl(b, noLink)];
    else if (it) n = ["em", null, ...inl(it, noLink)];
    else if (lt) n = !noLink && (h = href(lu)) ? A(h, inl(lt, 1)) : ["span", null, ...inl(lt, 1)];
    else if (url) n = !noLink && (h = href(url)) ? A(h, [url]) : url;
    else n = ["br", null];
    if (m.index > i) out.push(s.slice(i, m.index));
    out.push(n);
    i = re.lastIndex;
  }
  if (i < s.length) out.push(s.slice(i));
  return out;
};
const oldMd = (src) => {
  const out = [];
  let blk = null, list = null;
  for (const line of String(src).replace(/\r\n?/g, "\n").split("\n")) {
    let m;
    if (blk && blk.code) {
      if (/^\s*```/.test(line)) blk = null;
      else blk.t.push(line);
    } else if (/^\s*```/.test(line)) {
      out.push((blk = { code: 1, t: [] }));
      list = null;
    } else if (!line.trim()) blk = list = null;
    else if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      out.push(["hr", null]);
      blk = list = null;
    } else if ((m = /^\s*(?:[-*+•]|(\d{1,9})[.)])\s+(.*)$/.exec(line))) {
      const tag = m[1] ? "ol" : "ul";
      if (!list || list.tag !== tag) out.push((list = { tag, start: m[1], items: [] }));
      list.items.push((blk = { li: 1, t: [m[2]] }));
    } else if ((m = /^\s*#{1,6}\s+(.*)$/.exec(line))) {
      out.push({ h: 1, t: [m[1]] });
      blk = list = null;
    } else if (blk) blk.t.push(list && blk.li ? line.trim() : line);
    else out.push((blk = { t: [line] }));
  }
  return out.map((b) =>
    b.code ? ["pre", null, ["code", null, b.t.join("\n")]]
    : b.tag ? [b.tag, b.start > 1 ? { start: b.start } : null, ...b.items.map((i) => ["li", null, ...inl(i.t.join("\n"))])]
    : b.h ? ["p", null, ["strong", null, ...inl(b.t[0])]]
    : b[0] ? b
    : ["p", null, ...inl(b.t.join("\n"))]);
};
// ---- end of the old renderer

const XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>';
const CORPUS = [
  "",
  "Hello",
  "Hello\n",
  "\n\n\nHello\n\n",
  "Line one\nline two\n\nSecond paragraph with **bold** and *it* and `code`.",
  "# Title\nText under it\n## Sub\n- a\n- b\n  continued\n* c\n1. one\n2. two\n3) three\n\n7. seven\n8. eight",
  "- item\n1. switch to ordered\n- back to bullets\n\nafter",
  "```\ncode <b>x</b>\n\n  indented\n```\nafter the fence\n```js\nunterminated fence\n",
  "Text\n---\n* * *\n___\nmore",
  "Links: [docs](https://example.com/a?b=1) <https://x.example> https://example.com/path. and mailto:kim@example.com!",
  XSS + " [click me](javascript:window.__xss=3) **bold** [docs](https://example.com/a?b=\"onmouseover=window.__xss=4)",
  "[**bold link**](https://example.com) [x](ftp://nope.example) [nested [link](https://a.example)](https://b.example)",
  "Windows\r\nline ends\r\n\r\n- with\r\n- a list\rold mac\r",
  "**unterminated bold and *italic\nacross lines** ok*",
  "• bullet\n•not a bullet\n  - indented item\n    continuation\n\n\n1234567890. too long a number",
  "您好，请提供订单号（例如A-1.5）谢谢！\n1. 第一\n2. 第二",
  "Chapter 1\n\n" + Array.from({ length: 40 }, (_, i) => `Paragraph ${i} with **b${i}** and a [link](https://e.example/${i}).`).join("\n\n"),
];

function streamed(text, pieces) {
  const stream = new MarkdownStream();
  const done = [];
  let open = [];
  let sent = "";
  for (const piece of pieces) {
    const step = stream.push(piece);
    sent += piece;
    done.push(...step.done);
    open = step.open;
    assert.deepEqual([...done, ...open], oldMd(sent), `after ${JSON.stringify(sent)}`);
  }
  return [...done, ...open];
}

const random = (() => {
  let seed = 20260110; // a fixed seed: a failure repeats
  return () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
})();

let checks = 0;
for (const text of CORPUS) {
  const expected = oldMd(text);
  assert.deepEqual(markdownToTrees(text), expected, `at once: ${JSON.stringify(text)}`);
  assert.deepEqual(streamed(text, [...text]), expected, "one character at a time");
  for (let cut = 0; cut <= text.length; cut++) {
    assert.deepEqual(streamed(text, [text.slice(0, cut), text.slice(cut)]), expected, `cut at ${cut}`);
  }
  for (let round = 0; round < 20; round++) {
    const pieces = [];
    for (let at = 0; at < text.length;) {
      const size = 1 + Math.floor(random() * 12);
      pieces.push(text.slice(at, at + size));
      at += size;
    }
    assert.deepEqual(streamed(text, pieces), expected, `pieces ${JSON.stringify(pieces)}`);
  }
  checks++;
}

// A long answer streamed in small deltas: each delta re-parses only the open block, so the
// lines parsed per delta stay a few however long the answer grows (the old renderer parsed
// every line so far on every delta).
const long = Array.from({ length: 300 }, (_, i) => `Paragraph ${i}, a sentence or two long.`).join("\n\n");
let parsedLines = 0;
const original = BlockParser.prototype.addLine;
BlockParser.prototype.addLine = function (line) {
  parsedLines++;
  return original.call(this, line);
};
const stream = new MarkdownStream();
const blocksHandedOut = [];
for (let at = 0; at < long.length; at += 8) {
  const { done } = stream.push(long.slice(at, at + 8));
  blocksHandedOut.push(...done);
}
BlockParser.prototype.addLine = original;
const lines = long.split("\n").length;
const deltas = Math.ceil(long.length / 8);
let oldParsedLines = 0;
for (let at = 8; at < long.length + 8; at += 8) oldParsedLines += long.slice(0, at).split("\n").length;
// Final: every paragraph but the last two (the last line has no newline yet, so the block
// before it is still the parser's open one), each handed out once.
assert.equal(blocksHandedOut.length, 298);
assert.deepEqual([...blocksHandedOut, ...stream.push("").open], oldMd(long));
assert.ok(parsedLines < 5 * deltas, `parsed ${parsedLines} lines in ${deltas} deltas`);
assert.ok(parsedLines * 50 < oldParsedLines, `${parsedLines} vs ${oldParsedLines} the old way`);

console.log(`markdown: ${checks} texts match the old renderer at every split; ` +
            `streaming ${lines} lines in ${deltas} deltas parsed ${parsedLines} lines ` +
            `(the old renderer: ${oldParsedLines})`);
