// The console's one WebSocket (/ws/console/): live events for the partials and the open
// conversation, and the agent's presence. Reconnects with the backoff the widget uses too.

import { createBackoff } from "../../shared/src/backoff.js";
import { $ } from "./dom.js";

const PING_MS = 20000; // presence beat (agents.presence counts an agent online for 60 s)
const CLOSE_FORBIDDEN = 4403; // signed out, or not staff: reconnecting cannot help

let ws = null;

/** Sends if the socket is open; frames are dropped otherwise (the server re-syncs on open). */
export function send(frame) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}

function showConnection(state, text) {
  const badge = $("#conn");
  if (!badge) return;
  badge.dataset.state = state;
  badge.textContent = text;
}

/**
 * @param {string} path the socket's path (the console root's data-ws-path)
 * @param {object} hooks onOpen(reopened: boolean) after every (re)connection; onFrame(frame)
 */
export function connect(path, hooks) {
  const backoff = createBackoff({ firstMs: 500, maxMs: 30000 });
  let everOpened = false;
  let pingTimer = null;

  const open = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(scheme + "//" + location.host + path);
    showConnection("connecting", everOpened ? "Reconnecting…" : "Connecting…");
    ws.addEventListener("open", () => {
      backoff.reset();
      showConnection("open", "Live");
      hooks.onOpen(everOpened);
      everOpened = true;
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
    });
    ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") hooks.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      clearInterval(pingTimer);
      if (event.code === CLOSE_FORBIDDEN) {
        showConnection("closed", "Signed out — reload to log in");
        return;
      }
      showConnection("closed", "Offline — reconnecting…");
      setTimeout(open, backoff.next());
    });
  };
  open();
}
