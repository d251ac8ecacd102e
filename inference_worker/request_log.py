"""The one line each request leaves in the worker's log: its outcome, how long it took, and
its figures."""

import logging
import time

log = logging.getLogger("inference_worker")


def log_request(request_id: str, outcome: str, taken: float, **fields) -> None:
    details = " ".join(
        f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in fields.items()
        if value is not None
    )
    log.info("request %s %s in %.3fs %s", request_id, outcome, time.monotonic() - taken, details)
