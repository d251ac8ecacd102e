// What survives a reload, in localStorage under "csdesk:<site key>" (embed.js reads the same
// key to decide whether to load the widget before the visitor clicks):
//   {id, token}  the conversation to resume (absent once it has ended)
//   q: [{c: client_id, t: text}]  messages typed but not yet acknowledged by the server;
//                                 resent with the same client_id, so never stored twice
//   csat: 1 sent / 2 acknowledged; absent or 0: not asked yet in this conversation
// The short names are the stored format: keep them, or stored chats are lost on upgrade.
// Storage may be blocked (privacy settings) or full: the widget then works from memory.

export function loadState(key) {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(key)) || {};
  } catch {
    // blocked, or not JSON: start afresh
  }
  return {
    conversation: saved.id && saved.token ? { id: saved.id, token: saved.token } : null,
    queue: Array.isArray(saved.q) ? saved.q.filter((item) => item && item.c && item.t) : [],
    csat: saved.csat,
  };
}

/** The conversation is kept only while it is open; unsent messages are kept regardless. */
export function saveState(key, { conversation, queue, csat }) {
  try {
    if (conversation || queue.length) {
      localStorage.setItem(key, JSON.stringify({ ...conversation, q: queue, csat }));
    } else {
      localStorage.removeItem(key);
    }
  } catch {
    // full or blocked: memory only
  }
}
