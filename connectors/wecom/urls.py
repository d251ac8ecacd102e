from django.urls import path

from connectors.wecom.views import wecom_callback

urlpatterns = [
    path("<int:inbox_id>/callback", wecom_callback, name="wecom-callback"),
]
