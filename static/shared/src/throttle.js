// "Is typing" signals shared by the customer widget and the staff console.
//
// Every keystroke fires an input event, but the other side only needs to hear "still typing"
// now and then: the indicator there stays up a few seconds after each signal. The server
// drops extra signals too (chat/consumers.py TYPING_EVERY_SECONDS); not sending them saves
// frames on both sockets.

/** Milliseconds between two typing signals, on both clients. */
export const TYPING_EVERY_MS = 3000;

/**
 * @param {number} everyMs
 * @returns {() => boolean} true at most once per `everyMs` (and then starts the next wait).
 */
export function createThrottle(everyMs) {
  let last = -Infinity;
  return () => {
    const now = Date.now();
    if (now - last < everyMs) return false;
    last = now;
    return true;
  };
}
