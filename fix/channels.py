"""Redis names shared by runfix and the web/worker processes."""

from kernel.redis import key


def state_key(session_name: str) -> str:
    """runfix's exported state of one session (JSON, short TTL: absent means not running)."""
    return key("fix", "state", session_name)


def wake_channel() -> str:
    """Pub/sub channel that wakes runfix's main loop (new outbox rows, operator commands)."""
    return key("fix", "wake")
