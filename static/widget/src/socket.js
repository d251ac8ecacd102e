// The customer socket (/ws/chat/, docs/protocol.md): opening, staying alive, reconnecting.
// What the frames mean is frames.js's business; what may be sent when is the widget's
// (controller.js): this module only moves frames and says how the line is.

import { createBackoff } from "../../shared/src/backoff.js";

const PING_EVERY_MS = 25000; // well inside proxies' idle timeouts (often 60 s)
const PONG_WITHIN_MS = 10000; // no frame at all by then: the connection is dead, not idle
// Close codes of docs/protocol.md that need more than a plain reconnect.
const CLOSE_ORIGIN_NOT_ALLOWED = 4403; // this site key may not be used on this page: give up
const CLOSE_CONVERSATION_NOT_FOUND = 4404; // forget it and start a new one at once

export class ChatSocket {
  /**
   * @param {object} hooks
   * @param {() => string} hooks.url the URL to open now (it carries the conversation to resume)
   * @param {() => boolean} hooks.wanted whether a connection is wanted at all (a visitor who
   *   never opened the chat and has nothing stored gets none)
   * @param {() => boolean} hooks.ended an ended chat reconnects only on demand
   * @param {(frame: object) => void} hooks.onFrame
   * @param {(state: string) => void} hooks.onState "connecting", "online", "reconnecting", "offline"
   * @param {() => void} hooks.onRefused closed with 4403
   * @param {() => void} hooks.onConversationGone closed with 4404
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.ws = null;
    /** Set by the widget once the server said which conversation this is: frames may go. */
    this.ready = false;
    this.everConnected = false; // "Reconnecting…" rather than "Connecting…"
    this.refused = false;
    this.backoff = createBackoff({ firstMs: 1000, maxMs: 15000 });
    this.retryTimer = this.pingTimer = this.pongTimer = null;

    addEventListener("online", () => this.connectNow());
    addEventListener("offline", () => {
      if (this.ws) this.lost(this.ws, 0);
      hooks.onState("offline");
    });
    // Timers are throttled in background tabs: a tab coming back tries at once.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !this.ws) this.connectNow();
    });
  }

  /** Sends the frame if the line is ready; returns whether it went. Opens one if none. */
  send(frame) {
    if (this.ws && this.ready && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    if (!this.ws) this.connect();
    return false;
  }

  /** The server answered the opening: later losses count from the first delay again. */
  established() {
    this.everConnected = true;
    this.backoff.reset();
  }

  connect() {
    if (this.ws || this.refused || !this.hooks.wanted()) return;
    clearTimeout(this.retryTimer);
    if (!navigator.onLine) return this.hooks.onState("offline"); // the "online" event retries
    this.hooks.onState(this.everConnected ? "reconnecting" : "connecting");
    const ws = (this.ws = new WebSocket(this.hooks.url()));
    ws.onmessage = (event) => {
      if (ws !== this.ws) return; // a frame still arriving on a socket given up on
      clearTimeout(this.pongTimer); // any frame proves the line alive
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to crash on
      }
      if (frame && typeof frame === "object") this.hooks.onFrame(frame);
    };
    ws.onclose = (event) => this.lost(ws, event.code);
    ws.onopen = () => {
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => {
        if (!this.ready) return;
        this.send({ type: "ping" });
        clearTimeout(this.pongTimer);
        this.pongTimer = setTimeout(() => this.lost(ws, 0), PONG_WITHIN_MS);
      }, PING_EVERY_MS);
    };
  }

  /** Reconnect now rather than after the backoff (back online, tab visible again). */
  connectNow() {
    clearTimeout(this.retryTimer);
    this.backoff.reset();
    this.connect();
  }

  /** Drops the connection without reconnecting by itself (the widget reconnects). */
  drop() {
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    clearInterval(this.pingTimer);
    if (ws) {
      ws.onclose = ws.onmessage = null;
      ws.close();
    }
  }

  /** The socket closed (code from the server) or was found dead (code 0). */
  lost(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.ready = false;
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    ws.onclose = ws.onmessage = null;
    try {
      ws.close();
    } catch {
      // already closed
    }
    if (code === CLOSE_ORIGIN_NOT_ALLOWED) {
      this.refused = true;
      return this.hooks.onRefused();
    }
    if (code === CLOSE_CONVERSATION_NOT_FOUND) {
      this.backoff.reset();
      this.hooks.onConversationGone();
    }
    this.everConnected = true;
    this.hooks.onState("reconnecting");
    if (this.hooks.ended()) return this.hooks.onState("offline");
    const delay = code === CLOSE_CONVERSATION_NOT_FOUND ? 0 : this.backoff.next();
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
