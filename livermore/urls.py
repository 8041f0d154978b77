from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from livermore import dashboard, health, metrics

admin.site.site_header = "Livermore back office"
admin.site.site_title = "Livermore"
admin.site.index_title = "Operator console"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard_view), name="admin_dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include("livermore.api")),
]
