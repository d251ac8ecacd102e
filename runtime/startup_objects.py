"""Start-up's objects moved out of the garbage collector's way, for long-running processes.

A full collection pauses the whole process for a time that grows with every object the
collector tracks, and in Daphne or the inference worker that pause stalls every stream at
once. Measured in Daphne during `make bench`'s pipeline run: about 165,000 objects come from
start-up alone (Django, the apps, their libraries), two thirds of all it tracks while 250
conversations stream, and a full collection took 0.1-0.25 s there. Those objects live as long
as the process, so collecting them again and again finds nothing. They are collected once,
then frozen (moved to the permanent generation, which collections skip), when start-up is done.

No Django here: the inference worker freezes its own (model libraries and engine) too.
"""

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect start-up's garbage, then freeze what is left; returns how many were frozen."""
    # Collected first, so that no garbage is frozen (frozen objects are never freed).
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%d start-up objects frozen out of garbage collection", frozen)
    return frozen
