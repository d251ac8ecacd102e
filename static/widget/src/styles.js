// The panel's stylesheet, adopted into the widget's shadow root (the host page's CSS cannot
// reach in, ours cannot leak out). Kept one rule per line and with short class names because
// it ships inside widget.js, whose size counts against the 15 KB budget
// (scripts/widget-size.py). The class names are also the hooks tests/e2e use.
//
// Legend: w widget root (embed.js; .o while open) · l launcher (embed.js) · p panel ·
// hd header · ht title · st connection status (data-s = state) · ib icon button · mn menu ·
// sc scrolling area · lg message log · m message · c customer · pd pending (not yet acked) ·
// b bot or agent · who author · nt note under a message · src answer sources · sy system
// line · fb feedback (thumbs) · th thumb · cm feedback comment form · cl card (CSAT, contact)
// · cs card form · sr star · sm submit · ty typing dots · er error bar · hb "talk to a human"
// · f composer form · sb send button · ac action card (data-s = the call's status; .x: the
// call failed, shown as a notice).
export const PANEL_CSS = `[hidden]{display:none!important}
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
.who,.src>span{display:block;font-size:12px;font-weight:600;color:#4b5563}
.src{margin-top:6px;font-size:13px}
.b .src ul{margin:2px 0 0;padding-left:1.2em}
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
.ac{align-self:flex-start;max-width:86%;padding:8px 12px;background:#fff;border:1px solid #e3e6ea;border-left:3px solid var(--a);border-radius:10px;font-size:14px;overflow-wrap:anywhere}
.ac.x{background:#fffbeb;border-color:#f59e0b;color:#78350f}
.ac dl{display:grid;grid-template-columns:auto 1fr;gap:0 10px;margin:4px 0 0;font-size:13px}
.ac dt{color:#4b5563}
.ac dd{margin:0}
.ac .sm{margin:8px 8px 0 0}
.ac .sm+.sm{background:#fff;color:#374151;border:1px solid #c9ced6}
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
