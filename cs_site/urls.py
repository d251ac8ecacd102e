from django.contrib import admin
from django.urls import include, path

from chat.api import openai, v1
from cs_site import metrics_access

urlpatterns = [
    path("admin/", admin.site.urls),
    path("console/", include("agents.urls")),
    path("api/v1/", v1.api.urls),
    path("connectors/wecom/", include("connectors.wecom.urls")),  # WeCom's callbacks
    path("v1/", openai.api.urls),
    # django_prometheus's view, behind METRICS_ALLOWED_NETWORKS / METRICS_BEARER_TOKEN.
    path("metrics", metrics_access.metrics, name="prometheus-django-metrics"),
    # SAMPLE DATA: a fictional shop's order API for the sample actions; 404 unless
    # ACTIONS_SAMPLE_SHOP is on (chat/actions/sample_shop/).
    path("sample-shop/api/", include("chat.actions.sample_shop.urls")),
    path("", include("chat.urls")),
]
