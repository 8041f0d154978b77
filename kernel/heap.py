"""Keeping the cyclic garbage collector off the latency path of long-running processes.

A full (generation 2) collection walks every tracked object. A web process holds about 250,000 of
them after start-up (Django, DRF, the URL conf, the schema generator), and walking them took 100 to
200 ms: every request in flight waited, which was all of the API's 99th percentile at 150 orders/s.
Those objects live as long as the process, so they are frozen (moved to the permanent generation,
never scanned) once start-up is over; a full collection then walks only what came after.
"""

import gc


def freeze_startup_objects() -> None:
    """Collect start-up garbage, then exempt everything still alive from later collections. Call once
    the process has imported and built what it keeps for its whole life, before it starts serving."""
    gc.collect()
    gc.freeze()
