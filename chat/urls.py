from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.demo, name="demo"),
    path("healthz", views.healthz, name="healthz"),
    path("widget/config/<str:site_key>", views.widget_config, name="widget-config"),
]
