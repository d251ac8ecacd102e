/* CS Desk chat widget loader. Embed with:
 *   <script src="https://HOST/static/widget/embed.js" data-site-key="KEY" async></script>
 * Optional: data-lang="en|zh-CN", data-open="true", data-idle-minutes="10",
 * data-customer-token="JWT" (a verified customer: docs/verified-customers.md).
 *
 * This file is on every page of a company's site, so it stays small: it fetches the site's
 * config, draws only the launcher (in a shadow root, out of reach of the page's CSS) and loads
 * widget.js on first click/focus/hover, when data-open is set, or when the browser is idle if
 * a conversation is stored. The only global is window.CSDeskWidget: the page may call its
 * open() and setCustomerToken(token).
 * Built into static/widget/embed.js by scripts/build-static.sh. */

const global = (window.CSDeskWidget ||= {});

// The verified customer's token, signed by the company's back end: data-customer-token at
// first, then whatever the page hands over with CSDeskWidget.setCustomerToken(token) before
// the last one expires. widget.js sends it when its socket opens, and a new one at once.
let customerToken = "";
let onCustomerToken = null; // the mounted widget's listener
function setCustomerToken(token) {
  customerToken = typeof token === "string" ? token.trim() : "";
  if (onCustomerToken && customerToken) onCustomerToken(customerToken);
}

function warn(message) {
  console.warn("[CS Desk widget] " + message);
}

// The desk's address is wherever this file came from; a ?version suffix is kept for widget.js.
const OWN_SRC = /\/static\/widget\/embed\.js(\?[^#]*)?$/;

function findOwnTag() {
  let tag = document.currentScript;
  // currentScript is null when a tag manager or a bundler ran this file: search for it.
  if (!tag || !OWN_SRC.test(tag.src)) tag = [...document.scripts].find((s) => OWN_SRC.test(s.src));
  if (!tag) return warn("cannot find its own <script> tag");
  const options = tag.dataset;
  const key = options.siteKey;
  if (options.customerToken) setCustomerToken(options.customerToken);
  const match = OWN_SRC.exec(tag.src);
  const desk = { tag, options, key, base: tag.src.slice(0, match.index), version: match[1] || "" };
  if (!key) return warn("data-site-key is missing");
  fetchConfig(desk, 0);
}

/** The site's public config (name, greeting, colour, language); retried on network errors. */
function fetchConfig(desk, tries) {
  fetch(desk.base + "/widget/config/" + encodeURIComponent(desk.key), { credentials: "omit" })
    .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
    .then((config) => start(desk, config), (error) => {
      if (error === 403 || error === 404) {
        return warn(`site key "${desk.key}" may not be used on this page (HTTP ${error})`);
      }
      if (tries < 3) return setTimeout(() => fetchConfig(desk, tries + 1), 5000 * 3 ** (tries + 1));
      warn("could not load the widget configuration");
    });
}

/** Adds a stylesheet to a shadow root (constructable stylesheets, else a <style>). */
function adoptCss(root, text) {
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(text);
    root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
  } catch {
    const style = document.createElement("style");
    style.textContent = text;
    root.append(style);
  }
}

const SVG = "http://www.w3.org/2000/svg";
/** A 24×24 icon from one SVG path, hidden from assistive technology (buttons have labels). */
function icon(path) {
  const svg = document.createElementNS(SVG, "svg");
  const shape = document.createElementNS(SVG, "path");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  shape.setAttribute("d", path);
  svg.append(shape);
  return svg;
}
const CHAT_ICON = "M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2z";

/** Relative luminance (WCAG 2) of a #rrggbb colour. */
function luminance(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const value = parseInt(hex.substr(i, 2), 16) / 255;
    return value <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

const LAUNCHER_CSS = `.w{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"PingFang SC","Microsoft YaHei",sans-serif;color:#111827;-webkit-font-smoothing:antialiased}
*{box-sizing:border-box}
.l{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:56px;height:56px;border-radius:50%;border:0;padding:0;margin:0;background:var(--a);color:var(--f);box-shadow:0 4px 14px rgba(0,0,0,.25);cursor:pointer;display:grid;place-items:center;transition:transform .15s}
.l:hover{transform:scale(1.06)}
.l:focus-visible{outline:3px solid var(--r);outline-offset:3px}
.l svg{width:28px;height:28px;fill:currentColor}
.l b{position:absolute;top:-3px;right:-3px;min-width:20px;height:20px;border-radius:10px;padding:0 5px;background:#dc2626;color:#fff;font:700 12px/20px system-ui,sans-serif}
@media (prefers-reduced-motion:reduce){*{transition:none!important;animation:none!important}}`;

/**
 * widget.js under its content-hashed name when the config names one (docs/protocol.md, widget
 * config: cached for good, so a release reaches every visitor at once), resolved against this
 * file's URL and only on the desk's own origin; else the plain name (short cache), with this
 * file's ?version suffix.
 */
function widgetUrl(desk, config) {
  if (typeof config.widget_js === "string" && config.widget_js) {
    try {
      const hashed = new URL(config.widget_js, desk.tag.src);
      if (hashed.origin === new URL(desk.tag.src).origin) return hashed.href;
    } catch {
      // not a URL: the plain name
    }
  }
  return desk.base + "/static/widget/widget.js" + desk.version;
}

function start(desk, config) {
  if (!document.body) return addEventListener("DOMContentLoaded", () => start(desk, config));
  const { options, key, base } = desk;
  const accent = /^#[0-9a-f]{6}$/i.test(config.accent_color) ? config.accent_color : "#2563eb";
  const accentLuminance = luminance(accent);
  // Contrast ratios of white and of near-black text on the accent: the higher one wins.
  const whiteContrast = 1.05 / (accentLuminance + 0.05);
  const onAccent = whiteContrast >= (accentLuminance + 0.05) / 0.05 ? "#fff" : "#111827";
  const lang = String(options.lang || config.language || navigator.language || "en").slice(0, 35);
  const store = "csdesk:" + key;

  const host = document.createElement("csdesk-widget");
  host.style.cssText = "all:initial!important"; // the page's CSS on our element is undone
  const shadow = host.attachShadow({ mode: "open" });
  adoptCss(shadow, LAUNCHER_CSS);
  const root = document.createElement("div");
  root.className = "w";
  root.style.setProperty("--a", accent);
  root.style.setProperty("--f", onAccent);
  // Focus ring: the accent when it shows on white (3:1), else dark grey.
  root.style.setProperty("--r", whiteContrast >= 3 ? accent : "#1f2937");
  const launcher = document.createElement("button");
  launcher.className = "l";
  launcher.type = "button";
  launcher.setAttribute("aria-label", /^zh/i.test(lang) ? "打开聊天" : "Open chat");
  launcher.setAttribute("aria-expanded", "false");
  launcher.append(icon(CHAT_ICON));
  root.append(launcher);
  shadow.append(root);
  document.body.append(host);

  // What widget.js's mount() receives. These names are an interface between two files that
  // may be cached apart: keep them. tok() is the customer token now; onTok(fn) hears new ones.
  const ctx = {
    sr: shadow, w: root, btn: launcher, cfg: config, key, base, lang, store,
    css: adoptCss, icon, CHAT: CHAT_ICON, idle: options.idleMinutes ? +options.idleMinutes : 10,
    tok: () => customerToken, onTok: (listener) => (onCustomerToken = listener),
  };
  let widget; // the mounted widget's {open, close, toggle}
  let loading = null;
  const load = () =>
    (loading ||= new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = widgetUrl(desk, config);
      script.async = true;
      if (desk.tag.nonce) script.nonce = desk.tag.nonce; // pages with a CSP nonce
      script.onload = () => resolve((widget = global.mount(ctx)));
      script.onerror = reject;
      document.head.append(script);
    }).catch((error) => {
      loading = null; // the next click tries again
      warn("could not load widget.js");
      throw error;
    }));
  global.open = () => load().then((api) => api.open());
  launcher.onclick = () => (widget ? widget.toggle() : global.open());
  // Start loading as soon as the visitor heads for the launcher: it opens without a wait.
  for (const type of ["focus", "pointerenter"]) {
    launcher.addEventListener(type, () => load().catch(() => {}), { once: true });
  }

  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(store));
  } catch {
    // storage blocked
  }
  if (options.open === "true") {
    load().then((api) => api.open(1), () => {});
  } else if (saved && (saved.id || (saved.q && saved.q.length))) {
    // A conversation is under way (or a message waits): reconnect it without a click.
    (window.requestIdleCallback || setTimeout)(() => load().catch(() => {}), { timeout: 3000 });
  }
}

// Two tags on one page (or a page that re-runs its scripts) must not draw two launchers.
if (!global.started) {
  global.started = 1;
  // Set here, with the launcher: a second copy of this file must not take the page's calls.
  global.setCustomerToken = setCustomerToken;
  findOwnTag(); // now: document.currentScript is this tag only while this file first runs
}
