// Entry point of widget.js (built by scripts/build-static.sh into one minified IIFE).
//
// embed.js, the loader on the company's pages, draws the launcher, loads this file on first
// use and calls CSDeskWidget.mount(ctx), which builds the panel and returns {open, close,
// toggle}. CSDeskWidget is the only global either file creates.

import { ChatWidget } from "./controller.js";
import { markdownToTrees } from "./markdown.js";

const global = (globalThis.window || globalThis).CSDeskWidget ||= {};

global.mount = (ctx) => new ChatWidget(ctx).api;
// Markdown text → trees ([tag, attrs, ...children]): for tests and for checking by hand what an
// answer renders to. Not used by the widget itself.
global.md = markdownToTrees;
