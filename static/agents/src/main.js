// The agent console's live side (built into static/agents/console.js by
// scripts/build-static.sh): one WebSocket (/ws/console/) that keeps the htmx partials fresh
// and streams the open conversation. Message text only ever enters the page through
// textContent / text nodes, never as HTML.

import { setupNotifications } from "./alerts.js";
import { setupComposer } from "./composer.js";
import { $, currentId } from "./dom.js";
import { handle, setRoot, watchCurrent } from "./events.js";
import { setupHtmxGlue, updateTitle } from "./htmx-glue.js";
import { ALL_PARTIALS, refresh } from "./partials.js";
import { connect } from "./socket.js";
import { localizeTimes } from "./times.js";
import { scrollToEnd } from "./transcript.js";

const TIMES_EVERY_MS = 30000;

const root = $(".console");
if (root) {
  setRoot(root);
  setupComposer();
  setupHtmxGlue();
  localizeTimes();
  setInterval(localizeTimes, TIMES_EVERY_MS);
  updateTitle();
  setupNotifications();
  const list = $("#transcript");
  if (list) scrollToEnd(list);
  connect(root.dataset.wsPath, {
    onOpen(reopened) {
      // Whatever happened while the socket was down is on the server: fetch it again.
      if (reopened) ALL_PARTIALS.forEach((selector) => refresh(selector, 0));
      watchCurrent();
      // What happened between rendering the page and this watch is in the database.
      if (!reopened && currentId()) {
        refresh("#transcript", 300);
        refresh("#controls", 300);
      }
    },
    onFrame: handle,
  });
}
