// Reconnect delays shared by the customer widget and the staff console.
//
// Exponential backoff with "equal jitter": attempt n waits between half and all of
// min(maxMs, firstMs * 2^n). The doubling keeps a restarting server from being hammered; the
// jitter spreads the reconnects of many browsers that lost the server at the same moment, so
// they do not all come back in the same instant (a thundering herd).

/**
 * @param {{firstMs: number, maxMs: number}} options
 * @returns {{next: () => number, reset: () => void}}
 *   next(): the delay before the next attempt (and counts the attempt);
 *   reset(): after a connection that worked, start again from firstMs.
 */
export function createBackoff({ firstMs, maxMs }) {
  let attempts = 0;
  return {
    next() {
      const ceiling = Math.min(maxMs, firstMs * 2 ** attempts++);
      return ceiling * (0.5 + Math.random() / 2);
    },
    reset() {
      attempts = 0;
    },
  };
}
