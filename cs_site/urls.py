from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("console/", include("agents.urls")),
    path("", include("django_prometheus.urls")),
    path("", include("chat.urls")),
]
