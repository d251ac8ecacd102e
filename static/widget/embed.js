/* CS Desk chat widget loader. Embed with:
 *   <script src="https://HOST/static/widget/embed.js" data-site-key="KEY" async></script>
 * Optional: data-lang="en|zh-CN", data-open="true", data-idle-minutes="10".
 * Fetches the site's config, draws only the launcher (in a shadow root) and loads widget.js
 * on first click/focus/hover, when data-open is set, or when idle if a conversation is stored.
 * The only global is window.CSDeskWidget. */
(() => {
  "use strict";
  const W = (window.CSDeskWidget ||= {});
  if (W.started) return;
  W.started = 1;
  const RE = /\/static\/widget\/embed\.js(\?[^#]*)?$/;
  const warn = (m) => console.warn("[CS Desk widget] " + m);
  let me = document.currentScript;
  if (!me || !RE.test(me.src)) me = [...document.scripts].find((s) => RE.test(s.src));
  if (!me) return warn("cannot find its own <script> tag");
  const d = me.dataset, key = d.siteKey, m = RE.exec(me.src);
  const base = me.src.slice(0, m.index), ver = m[1] || "";
  if (!key) return warn("data-site-key is missing");
  const store = "csdesk:" + key;

  const css = (root, text) => {
    try {
      const s = new CSSStyleSheet();
      s.replaceSync(text);
      root.adoptedStyleSheets = [...root.adoptedStyleSheets, s];
    } catch (e) {
      const s = document.createElement("style");
      s.textContent = text;
      root.append(s);
    }
  };
  const NS = "http://www.w3.org/2000/svg";
  const icon = (path) => {
    const s = document.createElementNS(NS, "svg"), p = document.createElementNS(NS, "path");
    s.setAttribute("viewBox", "0 0 24 24");
    s.setAttribute("aria-hidden", "true");
    p.setAttribute("d", path);
    s.append(p);
    return s;
  };
  const CHAT = "M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2z";
  // Relative luminance (WCAG) of #rrggbb.
  const lum = (hex) => {
    const c = [1, 3, 5].map((i) => {
      const v = parseInt(hex.substr(i, 2), 16) / 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };

  let tries = 0;
  const getConfig = () =>
    fetch(base + "/widget/config/" + encodeURIComponent(key), { credentials: "omit" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then(start, (e) => {
        if (e === 403 || e === 404) return warn(`site key "${key}" may not be used on this page (HTTP ${e})`);
        if (tries++ < 3) return setTimeout(getConfig, 5000 * 3 ** tries);
        warn("could not load the widget configuration");
      });
  getConfig();

  function start(cfg) {
    if (!document.body) return addEventListener("DOMContentLoaded", () => start(cfg));
    const ac = /^#[0-9a-f]{6}$/i.test(cfg.accent_color) ? cfg.accent_color : "#2563eb";
    const L = lum(ac);
    // Text on the accent: whichever of white/near-black contrasts more.
    const fg = 1.05 / (L + 0.05) >= (L + 0.05) / 0.05 ? "#fff" : "#111827";
    const lang = String(d.lang || cfg.language || navigator.language || "en").slice(0, 35);
    const zh = /^zh/i.test(lang);
    const host = document.createElement("csdesk-widget");
    host.style.cssText = "all:initial!important";
    const sr = host.attachShadow({ mode: "open" });
    css(sr, `.w{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"PingFang SC","Microsoft YaHei",sans-serif;color:#111827;-webkit-font-smoothing:antialiased}
*{box-sizing:border-box}
.l{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:56px;height:56px;border-radius:50%;border:0;padding:0;margin:0;background:var(--a);color:var(--f);box-shadow:0 4px 14px rgba(0,0,0,.25);cursor:pointer;display:grid;place-items:center;transition:transform .15s}
.l:hover{transform:scale(1.06)}
.l:focus-visible{outline:3px solid var(--r);outline-offset:3px}
.l svg{width:28px;height:28px;fill:currentColor}
.l b{position:absolute;top:-3px;right:-3px;min-width:20px;height:20px;border-radius:10px;padding:0 5px;background:#dc2626;color:#fff;font:700 12px/20px system-ui,sans-serif}
@media (prefers-reduced-motion:reduce){*{transition:none!important;animation:none!important}}`);
    const w = document.createElement("div");
    w.className = "w";
    w.style.setProperty("--a", ac);
    w.style.setProperty("--f", fg);
    // Focus ring: the accent when it shows on white (3:1), else dark grey.
    w.style.setProperty("--r", 1.05 / (L + 0.05) >= 3 ? ac : "#1f2937");
    const btn = document.createElement("button");
    btn.className = "l";
    btn.type = "button";
    btn.setAttribute("aria-label", zh ? "打开聊天" : "Open chat");
    btn.setAttribute("aria-expanded", "false");
    btn.append(icon(CHAT));
    w.append(btn);
    sr.append(w);
    document.body.append(host);

    const ctx = { sr, w, btn, cfg, key, base, lang, store, css, icon, CHAT, idle: d.idleMinutes ? +d.idleMinutes : 10 };
    let api, loading;
    const load = () =>
      (loading ||= new Promise((ok, no) => {
        const s = document.createElement("script");
        s.src = base + "/static/widget/widget.js" + ver;
        s.async = true;
        if (me.nonce) s.nonce = me.nonce;
        s.onload = () => ok((api = W.mount(ctx)));
        s.onerror = no;
        document.head.append(s);
      }).catch((e) => {
        loading = null;
        warn("could not load widget.js");
        throw e;
      }));
    W.open = () => load().then((a) => a.open());
    btn.onclick = () => (api ? api.toggle() : W.open());
    for (const ev of ["focus", "pointerenter"]) btn.addEventListener(ev, () => load().catch(() => {}), { once: true });

    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(store)); } catch (e) { /* storage blocked */ }
    if (d.open === "true") load().then((a) => a.open(1), () => {});
    else if (saved && (saved.id || (saved.q && saved.q.length)))
      (window.requestIdleCallback || setTimeout)(() => load().catch(() => {}), { timeout: 3000 });
  }
})();
