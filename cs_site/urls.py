from django.contrib import admin
from django.urls import include, path

from chat.api import openai, v1

urlpatterns = [
    path("admin/", admin.site.urls),
    path("console/", include("agents.urls")),
    path("api/v1/", v1.api.urls),
    path("v1/", openai.api.urls),
    path("", include("django_prometheus.urls")),
    path("", include("chat.urls")),
]
