// The staff playground (/console/playground/), built into static/playground/playground.js by
// scripts/build-static.sh. A question goes to the send endpoint with the settings of each
// pane shown (one, or two side by side) and each answer comes back as Server-Sent Events read
// from a fetch() stream (asking.js). Model and staff text only ever enter the page through
// textContent and text nodes, never as HTML. The settings forms themselves are htmx partials
// (settings.js adds what htmx does not do).

import { setupAsking } from "./asking.js";
import { createPanes } from "./page.js";
import { setupSession } from "./session.js";
import { setupSettings } from "./settings.js";

const root = document.getElementById("playground");
if (root) {
  const panes = createPanes();
  setupSettings();
  const session = setupSession(root, panes);
  setupAsking(root, panes, session);
}
