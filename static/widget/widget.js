/* CS Desk chat widget: panel, socket (docs/protocol.md), safe markdown. Loaded by embed.js,
 * which calls CSDeskWidget.mount(ctx). Model and customer text only ever reach the page as
 * text nodes (append/textContent), never as HTML. */
(() => {
  "use strict";
  const W = ((globalThis.window || globalThis).CSDeskWidget ||= {});

  // ---- Safe markdown: text -> tree of [tag, attrs, ...children] (strings are text) ----
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
  const md = (src) => {
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
  W.md = md;

  // ---- DOM: h(tag, attrs, ...children); an array child is [tag, attrs, ...children] ----
  const h = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v == null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of kids) if (c != null && c !== false) e.append(Array.isArray(c) ? h(...c) : c);
    return e;
  };

  const T = {
    en: {
      open: "Open chat", close: "Close chat", chat: (n) => "Chat with " + n, min: "Minimise",
      menu: "More options", human: "Talk to a human", end: "End chat", input: "Message",
      ph: "Type your message…", send: "Send", log: "Conversation",
      connecting: "Connecting…", online: "Online", reconnecting: "Reconnecting…", offline: "Offline",
      sending: "Sending…", waiting: "Not sent yet — will send when back online",
      handoff: "We've let our team know — an agent will join soon.",
      away: "Our team is away right now; an agent will reply during business hours: ",
      agent: "Agent", cut: "This answer was cut off.", up: "Helpful", down: "Not helpful",
      more: "Tell us more (optional)", fsend: "Send", thanks: "Thanks for your feedback!",
      csat: "How would you rate this conversation?", star: (n) => n + (n > 1 ? " stars" : " star"),
      submit: "Submit", csatThanks: "Thank you! Your rating helps us improve.",
      ended: "This chat has ended. Type a message to start a new one.",
      unread: (n) => n + " unread",
      rate_limited: "You're sending messages quickly — we'll retry in a moment.",
      unavailable: "We're having trouble right now — we'll retry in a moment.",
      message_too_long: "That message is too long; please split it.",
      oops: "Something went wrong. Please try again.",
      joined: (n) => n + " joined the conversation.", left: "You're chatting with our assistant again.",
      askEmail: "No one can answer live right now. Leave your e-mail and we'll follow up:",
      email: "Your e-mail", contactThanks: "Thanks! We'll get back to you by e-mail.",
    },
    "zh-CN": {
      open: "打开聊天", close: "关闭聊天", chat: (n) => "与" + n + "聊天", min: "最小化",
      menu: "更多选项", human: "转人工客服", end: "结束对话", input: "消息",
      ph: "输入消息…", send: "发送", log: "对话记录",
      connecting: "正在连接…", online: "在线", reconnecting: "正在重新连接…", offline: "离线",
      sending: "发送中…", waiting: "尚未发送，恢复联网后将自动发送",
      handoff: "我们已通知客服团队，客服人员很快就会加入。",
      away: "客服团队目前不在线，将在工作时间内回复您：",
      agent: "客服", cut: "此回答被中断。", up: "有帮助", down: "没有帮助",
      more: "补充说明（可选）", fsend: "发送", thanks: "感谢您的反馈！",
      csat: "您对本次对话满意吗？", star: (n) => n + " 星", submit: "提交",
      csatThanks: "谢谢！您的评价将帮助我们改进。",
      ended: "对话已结束。输入消息即可开始新的对话。",
      unread: (n) => n + " 条未读",
      rate_limited: "发送过于频繁，稍后将自动重试。",
      unavailable: "服务暂时不可用，稍后将自动重试。",
      message_too_long: "消息过长，请分段发送。",
      oops: "出了点问题，请稍后再试。",
      joined: (n) => n + " 已加入对话。", left: "已转回智能助手。",
      askEmail: "目前暂无客服在线。请留下您的邮箱，我们会尽快联系您：",
      email: "您的邮箱", contactThanks: "谢谢！我们会通过邮件联系您。",
    },
  };

  const P = {
    down: "M7.4 8.6 12 13.2l4.6-4.6L18 10l-6 6-6-6z",
    more: "M12 8a2 2 0 1 0 0-4 2 2 0 0 0 0 4zm0 2a2 2 0 1 0 0 4 2 2 0 0 0 0-4zm0 6a2 2 0 1 0 0 4 2 2 0 0 0 0-4z",
    send: "M2 21 23 12 2 3v7l15 2-15 2z",
    thumb: "M1 21h4V9H1v12zm22-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.5-1.1L14.2 1 7.6 7.6C7.2 8 7 8.4 7 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7c.1-.3.2-.5.2-.8v-2z",
  };

  // Business hours like {"timezone": "Europe/Berlin", "mon-fri": "09:00-18:00", "sat": "10:00-14:00"}:
  // returns the hours as text when the team is away now, else "".
  const away = (bh) => {
    try {
      const D = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"], txt = [];
      const p = {};
      for (const x of new Intl.DateTimeFormat("en-US", { timeZone: bh.timezone, weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).formatToParts()) p[x.type] = x.value;
      const day = D.indexOf(p.weekday.toLowerCase()), now = p.hour + ":" + p.minute;
      for (const k in bh) {
        const m = /^([a-z]{3})(?:-([a-z]{3}))?$/.exec(k.toLowerCase()), r = /^(\d\d:\d\d)-(\d\d:\d\d)$/.exec(bh[k]);
        if (!m || !r) continue;
        const a = D.indexOf(m[1]), b = m[2] ? D.indexOf(m[2]) : a;
        if (a < 0 || b < 0) continue;
        if ((a <= b ? day >= a && day <= b : day >= a || day <= b) && now >= r[1] && now < r[2]) return "";
        txt.push(k + " " + bh[k]);
      }
      return txt.length ? txt.join(", ") + " (" + bh.timezone + ")" : "";
    } catch (e) {
      return "";
    }
  };

  const uid = () =>
    crypto.randomUUID ? crypto.randomUUID()
      : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) => (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));

  const CSS = `[hidden]{display:none!important}
button{font:inherit;color:inherit;cursor:pointer;margin:0}
svg{width:22px;height:22px;fill:currentColor}
:focus-visible{outline:3px solid var(--r);outline-offset:2px}
.p{position:fixed;z-index:2147483001;right:20px;bottom:88px;width:376px;height:min(620px,calc(100vh - 108px));display:flex;flex-direction:column;background:#f6f7f9;border-radius:14px;box-shadow:0 12px 40px rgba(0,0,0,.22);overflow:hidden}
.hd{position:relative;display:flex;align-items:center;gap:2px;padding:10px 8px 10px 16px;background:var(--a);color:var(--f)}
.hd :focus-visible{outline-color:currentColor;outline-offset:-3px}
.ht{flex:1;min-width:0;display:flex;flex-direction:column}
.ht strong{font-size:16px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.st{font-size:12px}
.st:before{content:"";display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px;background:#9ca3af;box-shadow:0 0 0 1.5px #fff}
.st[data-s=online]:before{background:#16a34a}
.st[data-s=connecting]:before,.st[data-s=reconnecting]:before{background:#f59e0b}
.ib{background:none;border:0;width:38px;height:38px;border-radius:8px;display:grid;place-items:center;padding:0}
.ib:hover{background:rgba(127,127,127,.25)}
.mn{position:absolute;right:8px;top:54px;z-index:2;min-width:190px;display:flex;flex-direction:column;padding:6px;background:#fff;color:#111827;border-radius:10px;box-shadow:0 6px 24px rgba(0,0,0,.22)}
.mn button{background:none;border:0;text-align:left;padding:10px 12px;border-radius:6px}
.mn button:hover,.mn button:focus{background:#f3f4f6}
.sc{flex:1;overflow-y:auto;overscroll-behavior:contain;padding:16px 14px 10px}
.lg{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:10px}
.m{max-width:86%;padding:9px 13px;border-radius:16px;overflow-wrap:anywhere}
.c{align-self:flex-end;background:var(--a);color:var(--f);white-space:pre-wrap;border-bottom-right-radius:4px}
.pd{opacity:.85}
.m small,.nt{display:block;font-size:12px;margin-top:3px}
.b{align-self:flex-start;background:#fff;border:1px solid #e3e6ea;border-bottom-left-radius:4px}
.b p,.b ul,.b ol,.b pre{margin:0 0 .55em}
.b>div>:last-child{margin-bottom:0}
.b ul,.b ol{padding-left:1.4em}
.b code{font:13px ui-monospace,Menlo,Consolas,monospace;background:#f1f3f5;padding:1px 4px;border-radius:4px}
.b pre{background:#f1f3f5;padding:8px;border-radius:6px;overflow-x:auto}
.b pre code{padding:0}
.b a{color:#1d4ed8}
.b hr{border:0;border-top:1px solid #e3e6ea}
.who{display:block;font-size:12px;font-weight:600;color:#4b5563}
.nt{color:#4b5563}
.sy{align-self:center;max-width:92%;text-align:center;font-size:13px;color:#4b5563}
.fb{display:flex;gap:2px;margin:4px -6px -4px}
.th{background:none;border:0;width:30px;height:30px;border-radius:6px;color:#6b7280;display:grid;place-items:center;padding:0}
.th:hover{background:#f3f4f6}
.th svg{width:16px;height:16px}
.th+.th svg{transform:rotate(180deg)}
.th[aria-pressed=true]{color:var(--r);background:#eef1f6}
.cm,.cs{display:flex;flex-direction:column;align-items:flex-start;gap:6px;margin-top:6px}
textarea{width:100%;resize:none;font:inherit;color:inherit;background:#fff;border:1px solid #c9ced6;border-radius:10px;padding:8px 10px;margin:0}
.sm{background:var(--a);color:var(--f);border:0;border-radius:8px;padding:6px 14px}
.sm:disabled{opacity:.5;cursor:default}
.cl{align-self:stretch;background:#fff;border:1px solid #e3e6ea;border-radius:12px;padding:12px 14px;text-align:center}
.cl p{margin:0;font-weight:600}
.cs{align-items:center}
.sr{background:none;border:0;font-size:28px;line-height:1;color:#9ca3af;padding:0 3px}
.sr.on{color:#d97706}
.ty{display:flex;gap:4px;width:fit-content;margin-top:10px;padding:13px 14px;background:#fff;border:1px solid #e3e6ea;border-radius:16px;border-bottom-left-radius:4px}
.ty i{width:7px;height:7px;border-radius:50%;background:#8b93a1;animation:d 1.2s infinite}
.ty i:nth-child(2){animation-delay:.2s}.ty i:nth-child(3){animation-delay:.4s}
@keyframes d{30%{opacity:1;transform:translateY(-3px)}0%,60%,to{opacity:.35}}
.er{padding:8px 14px;background:#fef2f2;color:#991b1b;font-size:13px}
.hb{align-self:center;margin:8px 0 0;background:#fff;border:1px solid #c9ced6;border-radius:999px;padding:4px 12px;font-size:13px;color:#374151}
.f{display:flex;align-items:flex-end;gap:8px;padding:10px 12px;background:#fff;border-top:1px solid #e3e6ea}
.f textarea{flex:1;max-height:120px;line-height:1.4}
.sb{flex:none;width:40px;height:40px;border:0;border-radius:10px;display:grid;place-items:center;padding:0;background:var(--a);color:var(--f)}
@media (max-width:480px){.p{inset:0;width:auto;height:auto;border-radius:0}.o .l{display:none}textarea{font-size:16px}}`;

  W.mount = (ctx) => {
    const { sr, w, btn, cfg, key, base, lang, store, icon } = ctx;
    const t = T[/^zh/i.test(lang) ? "zh-CN" : "en"];
    const name = String(cfg.name || "");
    const idleMs = ctx.idle > 0 ? ctx.idle * 60000 : 0;
    const wsUrl = base.replace(/^http/, "ws") + "/ws/chat/";
    let tz = "";
    try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { /* no Intl */ }
    ctx.css(sr, CSS);

    // ---- persisted state: {id, token, q: [{c: client_id, t: text}], csat} ----
    let st = {};
    try { st = JSON.parse(localStorage.getItem(store)) || {}; } catch (e) { /* blocked */ }
    let q = Array.isArray(st.q) ? st.q.filter((x) => x && x.c && x.t) : [];
    let cur = st.id && st.token ? { id: st.id, token: st.token } : null;
    const save = () => {
      try {
        const keep = cur && !closed;
        if (keep || q.length) localStorage.setItem(store, JSON.stringify({ ...(keep && cur), q, csat: st.csat }));
        else localStorage.removeItem(store);
      } catch (e) { /* storage full or blocked: memory only */ }
    };

    let sock = null, ready = false, attempt = 0, everUp = false, dead = false, opened = false, everOpened = false;
    let retryT, pingT, pongT, idleT, errT, flushT, idleDue = false, closed = false, status = "bot";
    let waiting = false, ackN = 0, startN = 0, live = null, unread = 0, said = false, csatEl = null, state = "";
    const bubbles = new Map(), pend = new Map(), outbox = [];

    // ---- DOM ----
    const stEl = h("span", { class: "st", role: "status" });
    const mi = (label, fn) => h("button", { type: "button", role: "menuitem", onclick: () => { menuShow(false); fn(); } }, label);
    const menu = h("div", { class: "mn", role: "menu", hidden: true }, mi(t.human, handoff), mi(t.end, endChat));
    const menuBtn = h("button", { type: "button", class: "ib", "aria-label": t.menu, "aria-haspopup": "menu", "aria-expanded": "false", onclick: () => menuShow(menu.hidden) }, icon(P.more));
    const log = h("ol", { class: "lg", role: "log", "aria-live": "polite", "aria-label": t.log });
    const typing = h("div", { class: "ty", "aria-hidden": "true", hidden: true }, h("i"), h("i"), h("i"));
    const sc = h("div", { class: "sc" }, log, typing);
    const errEl = h("div", { class: "er", role: "alert", hidden: true });
    const ta = h("textarea", { rows: 1, maxlength: 4000, "aria-label": t.input, placeholder: t.ph, enterkeyhint: "send" });
    const humanBtn = h("button", { type: "button", class: "hb", onclick: handoff }, t.human);
    // Hiding the focused button would drop focus out of the widget: hand it to the input.
    const hideHuman = () => { if (sr.activeElement === humanBtn) ta.focus(); humanBtn.hidden = true; };
    const panel = h("div", { class: "p", id: "csd-panel", role: "dialog", "aria-label": t.chat(name), hidden: true },
      h("div", { class: "hd" }, h("div", { class: "ht" }, h("strong", null, name), stEl), menuBtn,
        h("button", { type: "button", class: "ib", "aria-label": t.min, onclick: () => close() }, icon(P.down)), menu),
      sc, errEl, humanBtn,
      h("form", { class: "f", onsubmit: submit }, ta, h("button", { class: "sb", "aria-label": t.send }, icon(P.send))));
    w.append(panel);
    btn.setAttribute("aria-controls", "csd-panel");
    btn.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });

    // Keys typed in the widget are ours: the host page's shortcuts must not see them.
    for (const ev of ["keydown", "keyup", "keypress"]) panel.addEventListener(ev, (e) => e.stopPropagation());
    panel.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        if (!menu.hidden) { menuShow(false); menuBtn.focus(); } else close();
      } else if (!menu.hidden && /^Arrow(Up|Down)$/.test(e.key)) {
        const items = [...menu.children], i = items.indexOf(sr.activeElement);
        items[(i + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
        e.preventDefault();
      }
    });
    panel.addEventListener("click", (e) => {
      if (!menu.hidden && !menu.contains(e.target) && !menuBtn.contains(e.target)) menuShow(false);
    });
    ta.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(e); }
    });
    const grow = () => { ta.style.height = "auto"; ta.style.height = Math.min(ta.scrollHeight + 2, 120) + "px"; };
    ta.addEventListener("input", grow);
    // While a human is (or will be) on the other side, tell them the customer is typing.
    let lastTy = 0, agentTyT;
    ta.addEventListener("input", () => {
      if (status !== "bot" && Date.now() - lastTy > 3000) { lastTy = Date.now(); send({ type: "typing" }); }
    });
    const agentTyping = () => { typing.hidden = false; clearTimeout(agentTyT); agentTyT = setTimeout(setTyping, 4000); };
    const askContact = () => {
      const i = h("input", { type: "email", required: true, "aria-label": t.email, placeholder: t.email });
      const li = add(h("li", { class: "cl" }, h("form", { class: "cs", onsubmit: (e) => {
        e.preventDefault();
        send({ type: "contact", email: i.value.trim() }, 1);
        li.remove();
      } }, h("p", null, t.askEmail), i, h("button", { class: "sm" }, t.submit))), 1);
      i.focus();
    };

    function menuShow(on) {
      menu.hidden = !on;
      menuBtn.setAttribute("aria-expanded", String(on));
      if (on) menu.firstChild.focus();
    }
    const atBottom = () => sc.scrollHeight - sc.scrollTop - sc.clientHeight < 60;
    const scroll = () => { sc.scrollTop = sc.scrollHeight; };
    const add = (el, force) => {
      const stick = force || atBottom();
      log.append(el);
      if (stick) scroll();
      return el;
    };
    const sys = (text) => add(h("li", { class: "sy" }, text));
    const launcher = () => {
      btn.replaceChildren(icon(opened ? P.down : ctx.CHAT), unread ? h("b", { "aria-hidden": "true" }, String(unread)) : "");
      btn.setAttribute("aria-label", opened ? t.close : t.open + (unread ? " (" + t.unread(unread) + ")" : ""));
      btn.setAttribute("aria-expanded", String(opened));
    };
    const setTyping = () => { typing.hidden = !(waiting || (live && !live.text)); if (!typing.hidden && atBottom()) scroll(); };
    const error = (text) => {
      errEl.textContent = text;
      errEl.hidden = !text;
      clearTimeout(errT);
      if (text) errT = setTimeout(() => error(""), 8000);
    };
    function setState(s) {
      if (!navigator.onLine) s = "offline";
      state = s;
      stEl.dataset.s = s;
      stEl.textContent = t[s];
      for (const li of pend.values()) li.lastChild.textContent = s === "online" ? t.sending : t.waiting;
    }

    // ---- messages ----
    const custEl = (text, c) => {
      const li = h("li", { class: "m c" }, text);
      if (c) { li.classList.add("pd"); li.append(h("small", null, state === "online" ? t.sending : t.waiting)); pend.set(c, li); }
      return li;
    };
    const paint = (b) => {
      b.body.replaceChildren(...md(b.text).map((n) => h(...n)));
      b.li.hidden = !b.text;
    };
    const botEl = (id, text, who) => {
      const b = { id, text, body: h("div") };
      b.li = h("li", { class: "m b" }, who ? h("span", { class: "who" }, who) : "", b.body);
      if (id != null) bubbles.set(id, b);
      paint(b);
      add(b.li);
      return b;
    };
    const finish = (b, rating, cut) => {
      b.li.setAttribute("aria-busy", "false");
      if (cut) b.li.append(h("span", { class: "nt" }, t.cut));
      const th = (r, label) => h("button", { type: "button", class: "th", "aria-label": label, "aria-pressed": String(rating === r), onclick: () => rate(b, r) }, icon(P.thumb));
      b.li.append(h("div", { class: "fb" }, (b.up = th("up", t.up)), (b.dn = th("down", t.down))));
    };
    const pressed = (b, r) => {
      b.up.setAttribute("aria-pressed", String(r === "up"));
      b.dn.setAttribute("aria-pressed", String(r === "down"));
    };
    function rate(b, r) {
      b.r = r;
      send({ type: "feedback", message_id: b.id, rating: r }, 1);
      if (b.cm) return;
      const c = h("textarea", { rows: 2, maxlength: 1000, "aria-label": t.more, placeholder: t.more });
      b.cm = h("form", { class: "cm", onsubmit: (e) => {
        e.preventDefault();
        const text = c.value.trim();
        if (text) send({ type: "feedback", message_id: b.id, rating: b.r, comment: text.slice(0, 1000) }, 1);
        b.cm.replaceWith(h("span", { class: "nt" }, t.thanks));
      } }, c, h("button", { class: "sm" }, t.fsend));
      b.li.append(b.cm);
      c.focus();
      if (atBottom()) scroll();
    }
    const greet = () => cfg.greeting && botEl(null, String(cfg.greeting));
    const reset = () => {
      log.replaceChildren();
      bubbles.clear();
      live = csatEl = null;
      waiting = false;
      greet();
    };
    const repend = () => { for (const li of pend.values()) log.append(li); scroll(); };

    function showCsat() {
      idleDue = false;
      if (csatEl || st.csat || !said) return;
      let score = 0;
      const stars = [1, 2, 3, 4, 5].map((n) => h("button", { type: "button", class: "sr", "aria-label": t.star(n), "aria-pressed": "false", onclick: () => {
        score = n;
        stars.forEach((s, i) => { s.classList.toggle("on", i < n); s.setAttribute("aria-pressed", String(i + 1 === n)); });
        sub.disabled = false;
      } }, "★"));
      const c = h("textarea", { rows: 2, maxlength: 1000, "aria-label": t.more, placeholder: t.more });
      const sub = h("button", { class: "sm", disabled: true }, t.submit);
      csatEl = add(h("li", { class: "cl" }, h("form", { class: "cs", onsubmit: (e) => {
        e.preventDefault();
        if (!score) return;
        const comment = c.value.trim().slice(0, 1000);
        send({ type: "csat", score, ...(comment && { comment }) }, 1);
        sub.disabled = true;
        st.csat = 1;
        save();
      } }, h("p", null, t.csat), h("div", { role: "group", "aria-label": t.csat }, ...stars), c, sub)), 1);
    }
    function bump() {
      clearTimeout(idleT);
      if (idleMs && cur && !closed) idleT = setTimeout(() => (opened ? showCsat() : (idleDue = true)), idleMs);
    }
    function setClosed() {
      closed = true;
      waiting = false;
      live = null;
      setTyping();
      hideHuman();
      clearTimeout(idleT);
      sys(t.ended);
      showCsat();
      save(); // forgets id/token: a reload or the next message starts a new conversation
    }

    // ---- socket ----
    const want = () => !dead && (everOpened || cur || q.length);
    function send(f, keep) {
      if (sock && ready && sock.readyState === 1) { sock.send(JSON.stringify(f)); return; }
      if (keep) outbox.push(f);
      if (!sock) connect();
    }
    function flush() {
      for (const x of q) send({ type: "message", text: x.t, client_id: x.c });
      for (const f of outbox.splice(0)) send(f, 1);
    }
    function connect() {
      if (sock || !want()) return;
      clearTimeout(retryT);
      if (!navigator.onLine) return setState("offline");
      setState(everUp ? "reconnecting" : "connecting");
      const p = new URLSearchParams({ site: key, lang, page: location.href, tz });
      if (cur) { p.set("conversation", cur.id); p.set("token", cur.token); }
      const ws = (sock = new WebSocket(wsUrl + "?" + p));
      ws.onmessage = (e) => {
        if (ws !== sock) return;
        clearTimeout(pongT);
        let f;
        try { f = JSON.parse(e.data); } catch (x) { return; }
        if (f && typeof f == "object") onFrame(f);
      };
      ws.onclose = (e) => lost(ws, e.code);
      ws.onopen = () => {
        clearInterval(pingT);
        pingT = setInterval(() => {
          if (!ready) return;
          send({ type: "ping" });
          clearTimeout(pongT);
          pongT = setTimeout(() => lost(ws, 0), 10000);
        }, 25000);
      };
    }
    function lost(ws, code) {
      if (ws !== sock) return;
      sock = null;
      ready = false;
      clearInterval(pingT);
      clearTimeout(pongT);
      ws.onclose = ws.onmessage = null;
      try { ws.close(); } catch (e) { /* already closed */ }
      if (code === 4403) {
        dead = true;
        console.warn("[CS Desk widget] this site key may not be used on this page");
        return sr.host.remove();
      }
      if (code === 4404) { cur = null; attempt = 0; save(); }
      everUp = true;
      setState("reconnecting");
      // An ended chat reconnects only on demand (CSAT, a new message).
      if (closed) return setState("offline");
      const delay = Math.min(15000, 1000 * 2 ** attempt++) * (0.5 + Math.random() / 2);
      retryT = setTimeout(connect, code === 4404 ? 0 : delay);
    }
    const now = () => { clearTimeout(retryT); attempt = 0; connect(); };
    addEventListener("online", now);
    addEventListener("offline", () => { if (sock) lost(sock, 0); setState("offline"); });
    document.addEventListener("visibilitychange", () => { if (!document.hidden && !sock) now(); });

    function onFrame(f) {
      let b;
      switch (f.type) {
        case "conversation":
          everUp = true;
          attempt = 0;
          status = f.status || "bot";
          setState("online");
          humanBtn.hidden = status !== "bot";
          if (f.token) {
            cur = { id: f.id, token: f.token };
            closed = false;
            st.csat = 0;
            save();
            reset();
            repend();
          }
          if (!f.resumed) { ready = true; flush(); }
          break;
        case "history": {
          reset();
          for (const m of f.messages || []) {
            if (m.role === "customer") {
              said = true;
              if (m.client_id && pend.has(m.client_id)) {
                pend.get(m.client_id).remove();
                pend.delete(m.client_id);
                q = q.filter((x) => x.c !== m.client_id);
              }
              add(custEl(m.text));
            } else if (m.role === "system") sys(m.text);
            else {
              b = botEl(m.id, m.text || "", m.role === "agent" && (m.agent_name || t.agent));
              if (m.role === "bot") finish(b, m.rating, m.partial);
            }
          }
          save();
          repend();
          ready = true;
          flush();
          if (status === "closed") setClosed();
          else bump();
          break;
        }
        case "message.ack": {
          const li = pend.get(f.client_id);
          if (li) { li.classList.remove("pd"); li.lastChild.remove(); pend.delete(f.client_id); }
          q = q.filter((x) => x.c !== f.client_id);
          save();
          if (!f.duplicate && status === "bot") { waiting = true; ackN++; setTyping(); }
          bump();
          break;
        }
        case "bot.start":
          startN = ackN;
          live = bubbles.get(f.message_id) || botEl(f.message_id, "");
          live.li.setAttribute("aria-busy", "true");
          setTyping();
          break;
        case "bot.delta":
          b = bubbles.get(f.message_id) || botEl(f.message_id, "");
          if (!b.text && startN === ackN) waiting = false;
          b.text += f.text || "";
          {
            const stick = atBottom();
            paint(b);
            if (stick) scroll();
          }
          setTyping();
          break;
        case "bot.done":
          b = bubbles.get(f.message_id);
          if (b === live) live = null;
          if (startN === ackN) waiting = false;
          setTyping();
          if (b && !b.up) {
            finish(b, null, f.partial && !f.fallback);
            if (atBottom()) scroll();
          }
          got();
          break;
        case "agent.message":
          waiting = false;
          setTyping();
          status = "human";
          hideHuman();
          if (!bubbles.has(f.id)) botEl(f.id, f.text || "", f.agent_name || t.agent);
          got();
          break;
        case "feedback.ack":
          if ((b = bubbles.get(f.message_id)) && b.up) pressed(b, f.rating);
          break;
        case "csat.ack":
          if (csatEl) csatEl.replaceWith(h("li", { class: "sy" }, t.csatThanks));
          st.csat = 2;
          save();
          break;
        case "handoff.ack": {
          hideHuman();
          status = "waiting";
          waiting = false;
          setTyping();
          const hrs = cfg.business_hours && away(cfg.business_hours);
          sys(hrs ? t.away + hrs : t.handoff);
          if (f.ask_contact) askContact();
          break;
        }
        case "contact.ack":
          sys(t.contactThanks);
          break;
        case "agent.joined":
          status = "human";
          hideHuman();
          waiting = false;
          setTyping();
          sys(t.joined(f.agent_name || t.agent));
          break;
        case "agent.left":
          status = "bot";
          humanBtn.hidden = false;
          sys(t.left);
          break;
        case "agent.typing":
          agentTyping();
          break;
        case "conversation.closed":
          if (!closed) setClosed();
          break;
        case "error":
          if (f.code === "conversation_closed") return restart();
          if (f.code === "rate_limited" || f.code === "unavailable") {
            clearTimeout(flushT);
            flushT = setTimeout(() => ready && flush(), f.code === "rate_limited" ? (f.retry_after || 10) * 1000 : 3000);
          } else if (f.client_id && pend.has(f.client_id)) {
            // A message the server refused for good (the server may name it): don't resend it.
            pend.get(f.client_id).lastChild.textContent = f.message || t.oops;
            pend.delete(f.client_id);
            q = q.filter((x) => x.c !== f.client_id);
            save();
          }
          error(t[f.code] || f.message || t.oops);
      }
    }
    function got() {
      bump();
      if (!opened) { unread++; launcher(); }
    }

    // A new conversation after the last one closed: forget id/token, reconnect without them.
    function restart() {
      const o = sock;
      cur = null;
      closed = false;
      status = "bot";
      st.csat = 0;
      said = false;
      humanBtn.hidden = false;
      save();
      sock = null;
      ready = false;
      if (o) { o.onclose = o.onmessage = null; o.close(); }
      clearInterval(pingT);
      now();
    }
    function submit(e) {
      e.preventDefault();
      const text = ta.value.trim();
      if (!text) return;
      if (closed) restart();
      const c = uid();
      q.push({ c, t: text });
      save();
      said = true;
      add(custEl(text, c), 1);
      ta.value = "";
      grow();
      send({ type: "message", text, client_id: c });
      bump();
    }
    function handoff() {
      if (closed) restart();
      send({ type: "handoff.request" }, 1);
    }
    function endChat() {
      if (cur && !closed) send({ type: "close" }, 1);
      else close();
    }

    function open(noFocus) {
      if (!opened) {
        opened = everOpened = true;
        unread = 0;
        panel.hidden = false;
        w.classList.add("o");
        launcher();
        scroll();
        connect();
        if (idleDue) showCsat();
      }
      if (!noFocus) ta.focus();
    }
    function close() {
      if (!opened) return;
      opened = false;
      menuShow(false);
      panel.hidden = true;
      w.classList.remove("o");
      launcher();
      btn.focus();
    }

    greet();
    for (const x of q) log.append(custEl(x.t, x.c));
    setState("connecting");
    connect();
    return { open, close, toggle: () => (opened ? close() : open()) };
  };
})();
