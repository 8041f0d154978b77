from django.urls import path

from .api import CoinbaseKeyView, PortfolioCurrencyView, PortfolioSyncView, PortfolioView

urlpatterns = [
    path("portfolio", PortfolioView.as_view(), name="portfolio"),
    path("portfolio/coinbase-key", CoinbaseKeyView.as_view(), name="portfolio-coinbase-key"),
    path("portfolio/sync", PortfolioSyncView.as_view(), name="portfolio-sync"),
    path("portfolio/currency", PortfolioCurrencyView.as_view(), name="portfolio-currency"),
]
