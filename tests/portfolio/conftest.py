from tests.fakes.fixtures import celery_worker, coinbase_key, coinbase_rest

__all__ = ["celery_worker", "coinbase_key", "coinbase_rest"]
