"""SAMPLE DATA: the sample shop's order API, under /sample-shop/api/ (see views)."""

from django.urls import path

from chat.actions.sample_shop import views

app_name = "sample_shop"

urlpatterns = [
    path("orders/<str:order_id>", views.order, name="order"),
    path("latest-order", views.latest_order, name="latest_order"),
    path("orders/<str:order_id>/cancel", views.cancel, name="cancel"),
]
