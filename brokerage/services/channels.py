"""Redis pub/sub channel names the dealing engine announces changes on."""

from kernel.redis import key

TRIGGERS_CHANNEL = ("brokerage", "triggers")


ROUTED_CHANNEL = ("brokerage", "routed")


def triggers_channel() -> str:
    """Redis pub/sub channel telling trigger watchers which account's triggers changed."""
    return key(*TRIGGERS_CHANNEL)


def routed_channel() -> str:
    """Redis pub/sub channel announcing that an account has a new routed (A-Book) order, so the LP
    gateway (runfix) sends it at once instead of at its next poll."""
    return key(*ROUTED_CHANNEL)
