from tests.marketdata.conftest import tick_table

__all__ = ["tick_table"]
