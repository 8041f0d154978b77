"""Python thread states for QuickFIX's own threads (no QuickFIX and no Django here)."""

import ctypes
import threading

_local = threading.local()


def keep_thread_state() -> None:
    """Keep the calling thread's Python thread state for the rest of the thread's life.

    QuickFIX calls Python from threads Python did not start: every callback's PyGILState_Ensure
    builds a fresh thread state and its Release destroys it, with its frame stack (an mmap and a
    munmap per message, plus page faults). One extra Ensure, never released, keeps it alive; a
    thread-local (which lives in that thread state) says whether this thread already has one."""
    if not getattr(_local, "kept", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _local.kept = True
