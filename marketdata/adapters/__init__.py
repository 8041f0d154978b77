from django.utils.module_loading import import_string

from .base import Adapter

ADAPTERS = {
    "simulator": "marketdata.adapters.simulator.SimulatorAdapter",
    "coinbase": "marketdata.adapters.coinbase.CoinbaseAdapter",
    "binance": "marketdata.adapters.binance.BinanceAdapter",
    "oanda": "marketdata.adapters.oanda.OandaAdapter",
    "fix": "marketdata.adapters.fix.FixAdapter",
}


def adapter_class(kind: str) -> type[Adapter]:
    """The adapter of a venue kind; KeyError for a kind with no adapter."""
    return import_string(ADAPTERS[kind])
