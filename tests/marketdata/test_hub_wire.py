"""batch_wire publishes what the channel layer's group_send would, from sync code too."""

from channels.layers import get_channel_layer

from marketdata.hub import BATCH, batch_wire, envelope


def test_a_sync_caller_gets_the_group_channel_and_message_of_the_layer() -> None:
    envelopes = [envelope([("account.7", "account:7")], "order", {"id": 1})]
    channel, payload = batch_wire("account.7", envelopes)
    assert get_channel_layer().deserialize(payload) == {"type": BATCH, "envelopes": envelopes}
    assert channel.endswith("__group__account.7")


async def test_the_channel_is_the_one_the_layer_publishes_the_group_to() -> None:
    layer = get_channel_layer()
    assert batch_wire("account.7", [])[0] == layer._get_group_channel_name("account.7")  # type: ignore[union-attr]
